// Caffe's solver updates, solver_update (graphrt/ops/solvers.py): regularization (L2 or L1), then
// SGD (kind 0), Nesterov (1) or Adam (2), the rate from the device-resident iteration counter with
// Caffe's policies (0 fixed, 1 step, 2 multistep with up to 8 step values, 3 exp, 4 inv, 5 poly).
// (Compiled after prelude.cuh with T typedef'd to float or double: see ../sources.py.)
GR_DEVICE double gr_solver_rate(double t, double lr, int policy, double gamma, double power,
                                double stepsize, double max_iter, int nsv, const double* sv) {
    if (policy == 1) return lr * pow(gamma, floor(t / stepsize));
    if (policy == 2) {
        int passed = 0;
        for (int i = 0; i < nsv; ++i) passed += t >= sv[i] ? 1 : 0;
        return lr * pow(gamma, (double)passed);
    }
    if (policy == 3) return lr * pow(gamma, t);
    if (policy == 4) return lr * pow(1.0 + gamma * t, -power);
    if (policy == 5) {
        double f = 1.0 - t / max_iter;
        return lr * pow(f > 0.0 ? f : 0.0, power);
    }
    return lr;
}

extern "C" __global__ void solver_update(
        T* param, const T* grad, T* h, T* v, const double* it, long long n, int kind,
        double lr, double momentum, double momentum2, double delta, double decay, int l1,
        double lr_mult, int policy, double gamma, double power, double stepsize, double max_iter,
        int nsv, double sv0, double sv1, double sv2, double sv3, double sv4, double sv5,
        double sv6, double sv7) {
    const double t = it[0];
    const double sv[8] = {sv0, sv1, sv2, sv3, sv4, sv5, sv6, sv7};
    const T rate = (T)(gr_solver_rate(t, lr, policy, gamma, power, stepsize, max_iter, nsv, sv)
                       * lr_mult);
    const T mom = (T)momentum, dec = (T)decay, one = (T)1;
    // Adam's bias correction, in double as Caffe computes it
    const T rc = gr_mul(rate, (T)(sqrt(1.0 - pow(momentum2, t + 1.0)) / (1.0 - pow(momentum, t + 1.0))));
    GR_LOOP(i, n) {
        T g = grad[i];
        if (decay != 0.0) {
            const T p = param[i];
            g = g + gr_mul(dec, l1 ? (T)((p > (T)0) - (p < (T)0)) : p);
        }
        if (kind == 2) {
            const T b2 = (T)momentum2;
            const T m = gr_mul(h[i], mom) + gr_mul(one - mom, g);
            const T s = gr_mul(v[i], b2) + gr_mul(gr_mul(one - b2, g), g);
            h[i] = m;
            v[i] = s;
            param[i] = param[i] - gr_mul(rc, m) / (sqrt(s) + (T)delta);
        } else {
            const T old = h[i];
            const T hn = gr_mul(old, mom) + gr_mul(rate, g);
            h[i] = hn;
            param[i] = kind == 1 ? param[i] - (gr_mul(one + mom, hn) - gr_mul(mom, old))
                                 : param[i] - hn;
        }
    }
}
