"""The Gluon model zoo's architectures (AlexNet, VGG-11-BN, ResNet-18 v1 and v2, MobileNet v1 and
v2, SqueezeNet 1.0, DenseNet-121, Inception v3) as the symbols their ``export()`` writes, built
here with graphrt's MXNet symbol API and saved in MXNet's ``-symbol.json`` format, load in graphrt
and match a PyTorch translation (relative error < 1e-5) at opt levels 0 and 3.

Each architecture is written once, against a small builder interface; :class:`Symbols` emits MXNet
symbols (``Convolution``, ``BatchNorm`` with ``fix_gamma=False`` as Gluon exports it, ``clip`` for
ReLU6, ``_copy`` for identity shortcuts, ...) and :class:`Torch` computes the same layers with
``torch.nn.functional`` in float64 from the parameters graphrt loaded (randomized batch-norm
statistics), by their MXNet names.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphrt
from graphrt.frontends import mxnet as mx
from naive import rel_error

torch = pytest.importorskip("torch")
F = torch.nn.functional


class Symbols:
    """The builder interface, emitting MXNet symbols."""

    def __init__(self):
        self.count = 0

    def name(self, kind):
        self.count += 1
        return f"{kind}{self.count}"

    def conv(self, x, ch, k, s=1, p=0, groups=1, bias=True):
        k, s, p = (k if isinstance(k, tuple) else (k, k)), (s, s), (p if isinstance(p, tuple)
                                                                     else (p, p))
        return mx.sym.Convolution(data=x, num_filter=ch, kernel=k, stride=s, pad=p,
                                  num_group=groups, no_bias=not bias, name=self.name("conv"))

    def bn(self, x, eps=1e-5, affine=True):
        return mx.sym.BatchNorm(data=x, eps=eps, fix_gamma=not affine, use_global_stats=False,
                                momentum=0.9, name=self.name("bn"))

    def relu(self, x):
        return mx.sym.Activation(data=x, act_type="relu", name=self.name("relu"))

    def relu6(self, x):
        return mx.sym.clip(x, a_min=0.0, a_max=6.0, name=self.name("relu6"))

    def pool(self, x, kind, k, s, p=0, ceil=False):
        return mx.sym.Pooling(data=x, pool_type=kind, kernel=(k, k), stride=(s, s), pad=(p, p),
                              pooling_convention="full" if ceil else "valid",
                              name=self.name("pool"))

    def global_avg(self, x):
        return mx.sym.Pooling(data=x, pool_type="avg", kernel=(1, 1), global_pool=True,
                              name=self.name("pool"))

    def flatten(self, x):
        return mx.sym.Flatten(data=x, name=self.name("flatten"))

    def dense(self, x, units):
        return mx.sym.FullyConnected(data=x, num_hidden=units, name=self.name("dense"))

    def dropout(self, x):
        return mx.sym.Dropout(data=x, p=0.5, name=self.name("dropout"))

    def add(self, a, b):
        return mx.sym.elemwise_add(a, b, name=self.name("add"))

    def concat(self, *xs):
        return mx.sym.Concat(*xs, dim=1, name=self.name("concat"))

    def identity(self, x):
        return mx.sym.identity(x, name=self.name("copy"))


class Torch(Symbols):
    """The same layers computed with PyTorch from graphrt's parameters (named as MXNet names
    them), in float64."""

    def __init__(self, params):
        super().__init__()
        self.p = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in params.items()}

    def conv(self, x, ch, k, s=1, p=0, groups=1, bias=True):
        n = self.name("conv")
        pad = p if isinstance(p, tuple) else (p, p)
        return F.conv2d(x, self.p[f"{n}_weight"], self.p.get(f"{n}_bias") if bias else None,
                        stride=s, padding=pad, groups=groups)

    def bn(self, x, eps=1e-5, affine=True):
        n = self.name("bn")
        gamma = self.p[f"{n}_gamma"] if affine else None
        return F.batch_norm(x, self.p[f"{n}_moving_mean"], self.p[f"{n}_moving_var"], gamma,
                            self.p[f"{n}_beta"], training=False, eps=eps)

    def relu(self, x):
        self.name("relu")
        return F.relu(x)

    def relu6(self, x):
        self.name("relu6")
        return F.relu6(x)

    def pool(self, x, kind, k, s, p=0, ceil=False):
        self.name("pool")
        if kind == "max":
            return F.max_pool2d(x, k, s, p, ceil_mode=ceil)
        return F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=True)

    def global_avg(self, x):
        self.name("pool")
        return x.mean(dim=(2, 3), keepdim=True)

    def flatten(self, x):
        self.name("flatten")
        return x.reshape(len(x), -1)

    def dense(self, x, units):
        n = self.name("dense")
        return F.linear(x, self.p[f"{n}_weight"], self.p[f"{n}_bias"])

    def dropout(self, x):
        self.name("dropout")
        return x

    def add(self, a, b):
        self.name("add")
        return a + b

    def concat(self, *xs):
        self.name("concat")
        return torch.cat(xs, 1)

    def identity(self, x):
        self.name("copy")
        return x


# ---- the architectures, after the Gluon model zoo ------------------------------------------------
def conv_bn_relu(b, x, ch, k, s=1, p=0, eps=1e-5, groups=1, six=False):
    x = b.bn(b.conv(x, ch, k, s, p, groups, bias=False), eps)
    return b.relu6(x) if six else b.relu(x)


def alexnet(b, x):
    for ch, k, s, p, pool in ((64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False),
                              (256, 3, 1, 1, False), (256, 3, 1, 1, True)):
        x = b.relu(b.conv(x, ch, k, s, p))
        if pool:
            x = b.pool(x, "max", 3, 2)
    x = b.flatten(x)
    for _ in range(2):
        x = b.dropout(b.relu(b.dense(x, 4096)))
    return b.dense(x, 10)


def vgg11_bn(b, x):
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        x = b.pool(x, "max", 2, 2) if v == "M" else b.relu(b.bn(b.conv(x, v, 3, 1, 1)))
    x = b.flatten(x)
    for _ in range(2):
        x = b.dropout(b.relu(b.dense(x, 4096)))
    return b.dense(x, 10)


def resnet18_v1(b, x):
    x = b.pool(conv_bn_relu(b, x, 64, 7, 2, 3), "max", 3, 2, 1)
    ch_in = 64
    for ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for i in range(2):
            s = stride if i == 0 else 1
            y = b.bn(b.conv(conv_bn_relu(b, x, ch, 3, s, 1), ch, 3, 1, 1, bias=False))
            short = b.bn(b.conv(x, ch, 1, s, bias=False)) if s != 1 or ch != ch_in else \
                b.identity(x)
            x, ch_in = b.relu(b.add(y, short)), ch
    return b.dense(b.flatten(b.global_avg(x)), 10)


def resnet18_v2(b, x):
    x = b.bn(x, affine=False)
    x = b.pool(conv_bn_relu(b, x, 64, 7, 2, 3), "max", 3, 2, 1)
    ch_in = 64
    for ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for i in range(2):
            s = stride if i == 0 else 1
            act = b.relu(b.bn(x))
            short = b.conv(act, ch, 1, s, bias=False) if s != 1 or ch != ch_in else x
            y = b.conv(b.relu(b.bn(b.conv(act, ch, 3, s, 1, bias=False))), ch, 3, 1, 1, bias=False)
            x, ch_in = b.add(y, short), ch
    return b.dense(b.flatten(b.global_avg(b.relu(b.bn(x)))), 10)


def mobilenet_v1(b, x, m=0.25):
    x = conv_bn_relu(b, x, int(32 * m), 3, 2, 1)
    channels = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    strides = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    c = int(32 * m)
    for ch, s in zip(channels, strides):
        x = conv_bn_relu(b, x, c, 3, s, 1, groups=c)
        c = int(ch * m)
        x = conv_bn_relu(b, x, c, 1)
    return b.dense(b.flatten(b.global_avg(x)), 10)


def mobilenet_v2(b, x, m=0.25):
    x = conv_bn_relu(b, x, int(32 * m), 3, 2, 1, six=True)
    c_in = int(32 * m)
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            stride, c_out = (s if i == 0 else 1), int(c * m)
            y = conv_bn_relu(b, x, c_in * t, 1, six=True)
            y = conv_bn_relu(b, y, c_in * t, 3, stride, 1, groups=c_in * t, six=True)
            y = b.bn(b.conv(y, c_out, 1, bias=False))
            x = b.add(y, x) if stride == 1 and c_in == c_out else y
            c_in = c_out
    x = b.global_avg(conv_bn_relu(b, x, 1280, 1, six=True))
    return b.flatten(b.conv(x, 10, 1, bias=False))


def squeezenet1_0(b, x):
    def fire(x, squeeze, e1, e3):
        x = b.relu(b.conv(x, squeeze, 1))
        return b.concat(b.relu(b.conv(x, e1, 1)), b.relu(b.conv(x, e3, 3, 1, 1)))
    x = b.pool(b.relu(b.conv(x, 96, 7, 2)), "max", 3, 2, ceil=True)
    x = fire(fire(fire(x, 16, 64, 64), 16, 64, 64), 32, 128, 128)
    x = b.pool(x, "max", 3, 2, ceil=True)
    for sq, e in ((32, 128), (48, 192), (48, 192), (64, 256)):
        x = fire(x, sq, e, e)
    x = fire(b.pool(x, "max", 3, 2, ceil=True), 64, 256, 256)
    x = b.relu(b.conv(b.dropout(x), 10, 1))
    return b.flatten(b.global_avg(x))


def densenet121(b, x, growth=32, bn_size=4):
    x = b.pool(conv_bn_relu(b, x, 64, 7, 2, 3), "max", 3, 2, 1)
    c = 64
    for i, layers in enumerate((6, 12, 24, 16)):
        for _ in range(layers):
            y = b.conv(b.relu(b.bn(x)), bn_size * growth, 1, bias=False)
            y = b.conv(b.relu(b.bn(y)), growth, 3, 1, 1, bias=False)
            x, c = b.concat(x, y), c + growth
        if i != 3:
            c //= 2
            x = b.pool(b.conv(b.relu(b.bn(x)), c, 1, bias=False), "avg", 2, 2)
    return b.dense(b.flatten(b.global_avg(b.relu(b.bn(x)))), 10)


def inception_v3(b, x):
    def cbr(x, ch, k, s=1, p=0):
        return conv_bn_relu(b, x, ch, k, s, p, eps=1e-3)

    def avg_branch(x, ch):
        return cbr(b.pool(x, "avg", 3, 1, 1), ch, 1)

    def block_a(x, pool_features):
        return b.concat(cbr(x, 64, 1), cbr(cbr(x, 48, 1), 64, 5, 1, 2),
                        cbr(cbr(cbr(x, 64, 1), 96, 3, 1, 1), 96, 3, 1, 1),
                        avg_branch(x, pool_features))

    def block_b(x):
        return b.concat(cbr(x, 384, 3, 2), cbr(cbr(cbr(x, 64, 1), 96, 3, 1, 1), 96, 3, 2),
                        b.pool(x, "max", 3, 2))

    def block_c(x, c7):
        one_seven, seven_one = ((1, 7), (0, 3)), ((7, 1), (3, 0))
        y = cbr(cbr(cbr(x, c7, 1), c7, *one_seven[:1], 1, one_seven[1]), 192, seven_one[0], 1,
                seven_one[1])
        z = cbr(x, c7, 1)
        for ch, (k, p) in ((c7, seven_one), (c7, one_seven), (c7, seven_one), (192, one_seven)):
            z = cbr(z, ch, k, 1, p)
        return b.concat(cbr(x, 192, 1), y, z, avg_branch(x, 192))

    def block_d(x):
        y = cbr(cbr(x, 192, 1), 320, 3, 2)
        z = cbr(cbr(cbr(cbr(x, 192, 1), 192, (1, 7), 1, (0, 3)), 192, (7, 1), 1, (3, 0)), 192, 3, 2)
        return b.concat(y, z, b.pool(x, "max", 3, 2))

    def block_e(x):
        y = cbr(x, 384, 1)
        z = cbr(cbr(x, 448, 1), 384, 3, 1, 1)
        return b.concat(cbr(x, 320, 1), cbr(y, 384, (1, 3), 1, (0, 1)), cbr(y, 384, (3, 1), 1, (1, 0)),
                        cbr(z, 384, (1, 3), 1, (0, 1)), cbr(z, 384, (3, 1), 1, (1, 0)),
                        avg_branch(x, 192))

    x = cbr(cbr(cbr(x, 32, 3, 2), 32, 3), 64, 3, 1, 1)
    x = cbr(cbr(b.pool(x, "max", 3, 2), 80, 1), 192, 3)
    x = b.pool(x, "max", 3, 2)
    for pf in (32, 64, 64):
        x = block_a(x, pf)
    x = block_b(x)
    for c7 in (128, 160, 160, 192):
        x = block_c(x, c7)
    x = block_e(block_e(block_d(x)))
    return b.dense(b.dropout(b.flatten(b.global_avg(x))), 10)


ZOO = {"alexnet": (alexnet, 67), "vgg11_bn": (vgg11_bn, 32), "resnet18_v1": (resnet18_v1, 32),
       "resnet18_v2": (resnet18_v2, 32), "mobilenet1.0_0.25": (mobilenet_v1, 32),
       "mobilenetv2_0.25": (mobilenet_v2, 32), "squeezenet1.0": (squeezenet1_0, 64),
       "densenet121": (densenet121, 32), "inceptionv3": (inception_v3, 75)}


def _randomize(g, rng):
    for name, value in list(g.params.items()):
        if name.endswith("_gamma") and not g.param_info[name].trainable:
            continue  # fix_gamma: MXNet uses 1 whatever is stored
        if name.endswith("_moving_var") or name.endswith("_gamma"):
            g.params[name] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        elif name.endswith(("_moving_mean", "_beta", "_bias")):
            g.params[name] = rng.normal(0, 0.1, value.shape).astype(np.float32)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_gluon_zoo_symbol_matches_pytorch(name, tmp_path, model_results):
    arch, side = ZOO[name]
    with mx.name.NameManager():
        net = arch(Symbols(), mx.sym.Variable("data"))
    path = tmp_path / f"{name}-symbol.json"
    net.save(path)
    g = graphrt.load(path, input_shape=(3, side, side))
    if name == "resnet18_v2":  # Gluon's v2 starts with BatchNorm(scale=False, center=False)
        assert not g.param_info["bn1_gamma"].trainable
    _randomize(g, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 3, side, side)).astype(np.float32)
    x *= 30 if name.startswith("mobilenetv2") else 1  # ReLU6 saturates
    with torch.no_grad():
        want = arch(Torch(g.params), torch.from_numpy(x.astype(np.float64))).numpy()
    errors = [rel_error(graphrt.compile(g, device="cpu", batch_size=2, opt_level=level)(x),
                        want)[0] for level in (0, 3)]
    model_results("MXNet (-symbol.json)", f"Gluon zoo {name} ({side}x{side})", max(errors), 1e-5,
                  "vs a PyTorch translation, opt levels 0 and 3")
    for level, err in zip((0, 3), errors):
        assert err < 1e-5, f"{name} at opt_level {level}: relative error {err:.3g}"
    ops = {n["op"] for n in __import__("json").loads(path.read_text())["nodes"]}
    if name.startswith("mobilenetv2"):
        assert "clip" in ops
    if name == "resnet18_v1":
        assert "_copy" in ops


def test_mxnet_ops_of_the_zoo_against_numpy():
    """clip, _copy/identity/BlockGrad, the broadcasting arithmetic and the LeakyReLU and
    Activation variants, each against numpy."""
    x = np.linspace(-8, 8, 24, dtype=np.float32).reshape(2, 3, 4)
    y = np.linspace(0.5, 2, 6, dtype=np.float32).reshape(2, 3, 1)
    data, other = mx.sym.Variable("data"), mx.sym.Variable("other")
    cases = [
        (mx.sym.clip(data, a_min=0, a_max=6), np.clip(x, 0, 6)),
        (mx.sym.identity(mx.sym.BlockGrad(mx.sym._copy(data))), x),
        (mx.sym.broadcast_mul(data, other), x * y), (mx.sym.broadcast_add(data, other), x + y),
        (mx.sym.broadcast_sub(data, other), x - y), (mx.sym.broadcast_div(data, other), x / y),
        (mx.sym.Activation(data=data, act_type="softrelu"), np.log1p(np.exp(x))),
        (mx.sym.Activation(data=data, act_type="softsign"), x / (1 + np.abs(x))),
        (mx.sym.LeakyReLU(data=data, act_type="elu", slope=0.5), np.where(x > 0, x, 0.5 * np.expm1(x))),
    ]
    for sym, want in cases:
        two = "other" in sym.list_arguments()
        g = mx.to_graph(sym, input_shape={"data": (3, 4), "other": (3, 1)} if two else (3, 4))
        feeds = {"data": x, "other": y} if two else {"data": x}
        got = graphrt.run_reference(g, feeds)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    g = mx.to_graph(mx.sym.LeakyReLU(data=data, act_type="prelu", name="p"), input_shape=(3, 4))
    slope = g.params["p_gamma"]
    np.testing.assert_allclose(graphrt.run_reference(g, x),
                               np.where(x > 0, x, slope.reshape(1, 3, 1) * x), rtol=1e-6)
