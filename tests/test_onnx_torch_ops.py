"""PyTorch modules written here with the ops of issue 15 (ReLU6/Clip, mean, Hardswish, Hardsigmoid,
Upsample/Resize, LayerNorm, GELU/Erf, ELU, SELU, LeakyReLU, PReLU, Softplus, ConvTranspose2d,
argmax, reflect/replicate/circular Pad, pow, sqrt, div, where, comparisons, expand, repeat, casts),
exported through ONNX (a file loaded with ``graphrt.load``) and through ``graphrt.from_torch``,
match PyTorch (relative error < 1e-5) when compiled at opt levels 0 and 3."""
from __future__ import annotations

import warnings

import pytest

import graphrt
from naive import rel_error

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
nn, F = torch.nn, torch.nn.functional


class Activations(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.prelu = nn.PReLU(8)
        self.norm = nn.LayerNorm([8, 6, 6])

    def forward(self, x):
        y = F.relu6(self.conv(x))
        y = F.hardswish(y) + F.hardsigmoid(y) + F.silu(y) - F.elu(y, 0.5) + F.selu(y)
        y = self.prelu(y) + F.softplus(y) + F.softsign(y) + F.leaky_relu(y, 0.2)
        y = F.gelu(self.norm(y)) + F.gelu(y, approximate="tanh") + torch.erf(y)
        return (y.clamp(-2.0, 30.0) + y.clamp(max=3.0)).mean(dim=(2, 3))


class Spatial(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
        self.group_up = nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2)

    def forward(self, x):
        y = self.up(x)
        y = y + F.interpolate(x.mean(1, keepdim=True), scale_factor=2, mode="nearest")
        y = F.interpolate(y, size=(9, 7), mode="bilinear", align_corners=False)
        y = y + F.interpolate(y, size=(9, 7), mode="bilinear", align_corners=True)
        y = F.pad(y, (1, 2, 2, 1), mode="reflect") + F.pad(y, (1, 2, 2, 1), mode="replicate")
        y = y + F.pad(y, (1, 1, 0, 0), mode="circular")[:, :, :, 1:-1]
        return self.group_up(y)


class Arithmetic(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.rand(1, 3, 1, 1) + 0.5)

    def forward(self, x):
        a = x.abs() + 0.5
        y = torch.pow(a, 2.5) + a ** self.w + torch.sqrt(a) / (a + x * x)
        y = torch.where(x > 0, y, -y) + torch.where(x <= 0.5, x, 2 * x)
        y = y + (torch.eq(x, F.relu(x)) * 1.0) + torch.maximum(x, y) - torch.minimum(x, -y)
        y = y + y[:, :, :1].expand(-1, -1, 6, -1) + y[:, :1].repeat(1, 3, 1, 1)
        return y + x.argmax(dim=1, keepdim=True).to(x.dtype) + y.amax(dim=(2, 3), keepdim=True)


class Tokens(nn.Module):
    """(N, T, C) through LayerNorm over C and a GELU MLP: a transformer block's shape."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


MODULES = {"activations": (Activations, (2, 3, 6, 6)), "spatial": (Spatial, (2, 3, 4, 5)),
           "arithmetic": (Arithmetic, (2, 3, 6, 5)), "tokens": (Tokens, (2, 7, 16))}


def _module(name):
    torch.manual_seed(0)
    cls, shape = MODULES[name]
    m = cls().eval()
    with torch.no_grad():  # random, not default, statistics and scales
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(*shape)
    return m, x


def _check(graph, m, x, record=None, what=""):
    with torch.no_grad():
        want = m(x).double().numpy()
    assert want.std() > 0.01 * abs(want).max()  # not saturated: the comparison can fail
    xv = x.numpy()
    errors = [rel_error(graphrt.compile(graph, device="cpu", batch_size=len(xv),
                                        opt_level=level)(xv), want)[0] for level in (0, 3)]
    if record is not None:
        record(*what, max(errors), 1e-5, "vs PyTorch, opt levels 0 and 3")
    for level, err in zip((0, 3), errors):
        assert err < 1e-5, f"opt_level {level}: relative error {err:.3g}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_from_torch_matches_pytorch(name, model_results):
    m, x = _module(name)
    _check(graphrt.from_torch(m, x), m, x, model_results,
           ("PyTorch (from_torch)", f"{MODULES[name][0].__name__} (tests/test_onnx_torch_ops.py)"))


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_onnx_file_matches_pytorch(name, opset, tmp_path, model_results):
    m, x = _module(name)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"])
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    g = graphrt.load(path)
    _check(g, m, x, model_results, (f"ONNX opset {opset} (PyTorch export)",
                                    f"{MODULES[name][0].__name__} (tests/test_onnx_torch_ops.py)"))
    if name == "activations" and opset == 20:
        assert "Gelu" in ops  # opset 20 has the op; 17 writes it with Erf
    if name == "spatial":
        assert {"ConvTranspose", "Resize", "Pad"} <= ops


def test_mean_of_everything_is_computed_over_the_whole_batch():
    """x.mean() reduces the batch too: compiled for the batch it runs whole, and a batch larger
    than the executable's is refused instead of averaged chunk by chunk."""
    class Mean(nn.Module):
        def forward(self, x):
            return (x * 2).mean()
    x = torch.randn(4, 3)
    g = graphrt.from_torch(Mean(), x)
    exe = graphrt.compile(g, device="cpu", batch_size=4)
    assert abs(float(exe(x.numpy())) - float((x * 2).mean())) < 1e-6
    with pytest.raises(graphrt.InputError, match="whole batch"):
        graphrt.compile(g, device="cpu", batch_size=2)(x.numpy())
