// the optimizer step (SGD with Caffe's lr policies) and the iteration counter
// (compiled after prelude.cuh with T typedef'd to float or double: see ../sources.py)
// policies: 0 fixed, 1 step, 2 multistep (up to 8 step values), 3 exp, 4 inv, 5 poly
extern "C" __global__ void sgd_update(
        T* param, const T* grad, T* vel, const double* it, long long n,
        double lr, double momentum, double decay, double lr_mult, int policy, double gamma,
        double power, double stepsize, double max_iter, int nsv,
        double sv0, double sv1, double sv2, double sv3, double sv4, double sv5, double sv6,
        double sv7, int caffe) {
    const double t = it[0];
    double rate = lr;
    if (policy == 1) {
        rate = lr * pow(gamma, floor(t / stepsize));
    } else if (policy == 2) {
        const double sv[8] = {sv0, sv1, sv2, sv3, sv4, sv5, sv6, sv7};
        int passed = 0;
        for (int i = 0; i < nsv; ++i) passed += t >= sv[i] ? 1 : 0;
        rate = lr * pow(gamma, (double)passed);
    } else if (policy == 3) {
        rate = lr * pow(gamma, t);
    } else if (policy == 4) {
        rate = lr * pow(1.0 + gamma * t, -power);
    } else if (policy == 5) {
        double f = 1.0 - t / max_iter;
        rate = lr * pow(f > 0.0 ? f : 0.0, power);
    }
    const T r = (T)(rate * lr_mult), mom = (T)momentum, dec = (T)decay;
    GR_LOOP(i, n) {
        T g = grad[i];
        if (decay != 0.0) g = g + gr_mul(dec, param[i]);
        // PyTorch: v = m v + g, p -= r v; Caffe: v = m v + r g, p -= v (see graphrt/ops/optim.py)
        const T v = caffe ? gr_mul(vel[i], mom) + gr_mul(r, g) : gr_mul(vel[i], mom) + g;
        vel[i] = v;
        param[i] = caffe ? param[i] - v : param[i] - gr_mul(r, v);
    }
}

extern "C" __global__ void counter_inc(double* it) {
    if (blockIdx.x == 0 && threadIdx.x == 0) it[0] = it[0] + 1.0;
}
