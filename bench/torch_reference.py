"""Any graphrt :class:`~graphrt.Graph` as a PyTorch eager module: the benchmark's peer and an
independent check of graphrt's numerics.

    from torch_reference import to_torch
    module = to_torch(graph)              # parameters copied from graph.params
    with torch.no_grad():
        y = module(x)                     # numpy or torch in, torch out (a dict for several)

The module runs the graph node by node in topological order with ``torch.nn.functional`` — what a
PyTorch user would write for the same model. Each op follows the semantics in its graphrt docstring
(``graphrt/ops/*.py``); where PyTorch's built-in differs, the difference is handled explicitly:

- convolution and pooling pads are (top, bottom, left, right) in graphrt; asymmetric ones go
  through ``F.pad`` (zeros for conv and average pooling, -inf for max pooling) before the op;
- pooling uses PyTorch's own ``padding``/``ceil_mode``/``count_include_pad`` when the pads are
  symmetric and at most half the kernel (the rules then agree); otherwise the input is padded to
  cover exactly the windows graphrt's output size implies and the average divisor is counted by
  pooling a mask, so any pads graphrt accepts work;
- ``lrn`` uses ``F.local_response_norm`` for odd sizes; for even sizes the window differs
  (graphrt runs from c - (size-1)//2 to c + size//2, PyTorch from c - size//2), so it is summed
  explicitly;
- ``zero_pad`` and ``pad`` crop with negative pads, including crops deeper than the input;
- the ops added with issue 15 (activations, binary ops, reductions, layer norm, resize, transposed
  convolution, indexing) are translated in ``torch_reference_more.py``.

The training-only ops (gradients, optimizer updates) have no translation; in ``train()`` mode batch
norm uses batch statistics and updates its running buffers as PyTorch does (dropout stays the
identity), which is what the training-step comparison needs.

Parameters become ``nn.Parameter`` s (``requires_grad`` from ``graph.param_info``) under sanitized
attribute names; ``module.param_names`` maps graph name -> attribute name.
"""
from __future__ import annotations

import math
import re
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import graphrt
import torch_reference_more as more

__all__ = ["to_torch", "GraphModule", "SUPPORTED_OPS"]


# ---- op implementations: (attrs, inputs: list[Tensor]) -> list[Tensor] --------------------------
def _activate(y: torch.Tensor, activation: str, negative_slope: float,
              params=()) -> torch.Tensor:
    if activation in more.ACTIVATIONS:
        return more.activation(activation, params, y)
    if activation == "relu":
        return F.relu(y) if negative_slope == 0.0 else F.leaky_relu(y, negative_slope)
    if activation == "tanh":
        return torch.tanh(y)
    if activation == "sigmoid":
        return torch.sigmoid(y)
    if activation != "none":
        raise ValueError(f"unknown fused activation {activation!r}")
    return y


def _conv2d(attrs, ins):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) == 3 else None
    t, bo, l, r = attrs["pads"]
    if t == bo and l == r:
        padding = (t, l)
    else:
        x = F.pad(x, (l, r, t, bo))
        padding = 0
    y = F.conv2d(x, w, b, stride=tuple(attrs["stride"]), padding=padding,
                 dilation=tuple(attrs["dilation"]), groups=attrs["groups"])
    return [_activate(y, attrs["activation"], attrs["negative_slope"],
                      attrs.get("activation_params", ()))]


def _dense(attrs, ins):
    y = F.linear(ins[0], ins[1], ins[2] if len(ins) == 3 else None)
    return [_activate(y, attrs["activation"], attrs["negative_slope"],
                      attrs.get("activation_params", ()))]


def _pool_out(size: int, k: int, s: int, lo: int, hi: int, ceil_mode: bool) -> int:
    """graphrt's output size (ops/pool.py docstring), written out again here."""
    span = size + lo + hi - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + lo:
        out -= 1
    return out


def _pool_geometry(attrs, h, w):
    if attrs["global_pool"]:
        return (h, w), (1, 1), (0, 0, 0, 0)
    return tuple(attrs["kernel"]), tuple(attrs["stride"]), tuple(attrs["pads"])


def _native_pool_ok(k, pads) -> bool:
    """PyTorch's pooling handles symmetric pads up to half the kernel with graphrt's rules."""
    t, b, l, r = pads
    return t == b and l == r and t <= k[0] // 2 and l <= k[1] // 2


class _Pool:
    """max_pool / avg_pool with graphrt's geometry; the divisor mask is cached per input size."""

    def __init__(self, kind: str):
        self.kind = kind
        self._divisors: dict = {}

    def __call__(self, attrs, ins):
        x = ins[0]
        h, w = x.shape[-2:]
        k, s, pads = _pool_geometry(attrs, h, w)
        ceil_mode = bool(attrs["ceil_mode"]) and not attrs["global_pool"]
        if _native_pool_ok(k, pads):
            padding = (pads[0], pads[2])
            if self.kind == "max":
                return [F.max_pool2d(x, k, s, padding, ceil_mode=ceil_mode)]
            return [F.avg_pool2d(x, k, s, padding, ceil_mode=ceil_mode,
                                 count_include_pad=bool(attrs["count_include_pad"]))]
        # general case: pad (or crop) to exactly the windows graphrt's output size covers
        t, b, l, r = pads
        oh = _pool_out(h, k[0], s[0], t, b, ceil_mode)
        ow = _pool_out(w, k[1], s[1], l, r, ceil_mode)
        need_h, need_w = (oh - 1) * s[0] + k[0], (ow - 1) * s[1] + k[1]
        spec = (l, need_w - w - l, t, need_h - h - t)
        if self.kind == "max":
            return [F.max_pool2d(F.pad(x, spec, value=-math.inf), k, s)]
        total = F.avg_pool2d(F.pad(x, spec), k, s, divisor_override=1)
        return [total / self._divisor(x, attrs, k, s, pads, spec)]

    def _divisor(self, x, attrs, k, s, pads, spec):
        h, w = x.shape[-2:]
        key = (h, w, x.dtype, x.device)
        if key not in self._divisors:
            t, b, l, r = pads
            mask = torch.zeros((1, 1, h + t + b, w + l + r), dtype=x.dtype, device=x.device)
            if attrs["count_include_pad"]:
                mask[...] = 1          # the padded input counts; overhang past it does not
            else:
                mask[..., t:t + h, l:l + w] = 1   # only real input elements count
            # the mask lives in padded coordinates: extend/crop it like the input
            mask = F.pad(mask, (0, spec[1] - r, 0, spec[3] - b))
            div = F.avg_pool2d(mask, k, s, divisor_override=1)
            self._divisors[key] = div.clamp_min(1)
        return self._divisors[key]


def _lrn(attrs, ins):
    x = ins[0]
    size, alpha, beta, k = attrs["size"], attrs["alpha"], attrs["beta"], attrs["k"]
    if size % 2 == 1:
        return [F.local_response_norm(x, size, alpha, beta, k)]
    # even size: window c - (size-1)//2 .. c + size//2 (PyTorch's is mirrored)
    sq = (x * x).unsqueeze(1)  # (N, 1, C, H, W)
    sq = F.pad(sq, (0, 0, 0, 0, (size - 1) // 2, size // 2))
    window = F.avg_pool3d(sq, (size, 1, 1), stride=1).squeeze(1)
    return [x / (window * alpha + k) ** beta]


_TRAINING = [False]  # set by GraphModule.forward from module.training


def _batch_norm(attrs, ins):
    """In train() mode, batch statistics and PyTorch's running-average update (momentum, unbiased
    running variance), as the training comparison with graphrt's batch_norm_train needs."""
    x, mean, var = ins[:3]
    gamma, beta = (ins[3], ins[4]) if len(ins) == 5 else (None, None)
    return [F.batch_norm(x, mean, var, gamma, beta, training=_TRAINING[0],
                         momentum=attrs.get("momentum", 0.1), eps=attrs["eps"])]


def _channel_shape(x):
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


def _channel_affine(attrs, ins):
    x = ins[0]
    shape = _channel_shape(x)
    y = x * ins[1].reshape(shape)
    if len(ins) == 3:
        y = y + ins[2].reshape(shape)
    return [y]


def _relu(attrs, ins):
    return [_activate(ins[0], "relu", attrs["negative_slope"])]


def _scale(attrs, ins):
    y = ins[0]
    if attrs["scale"] != 1.0:
        y = y * attrs["scale"]
    if attrs["shift"]:
        y = y + attrs["shift"]
    if attrs["power"] != 1.0:
        y = torch.pow(y, attrs["power"])
    return [y]


def _add(attrs, ins):
    coeffs = attrs["coeffs"] or (1.0,) * len(ins)
    y = ins[0] * coeffs[0] if coeffs[0] != 1.0 else ins[0]
    for c, x in zip(coeffs[1:], ins[1:]):
        y = y + (x if c == 1.0 else c * x)
    return [y]


def _mul(attrs, ins):
    y = ins[0]
    for x in ins[1:]:
        y = y * x
    return [y]


def _zero_pad(attrs, ins):
    x = ins[0]
    t, b, l, r = attrs["pads"]
    h, w = x.shape[-2:]
    out_h, out_w = h + t + b, w + l + r
    crop_h = h - max(0, -t) - max(0, -b)
    crop_w = w - max(0, -l) - max(0, -r)
    if crop_h <= 0 or crop_w <= 0:  # cropped away entirely: all zeros
        return [x.new_zeros(tuple(x.shape[:-2]) + (out_h, out_w))]
    x = x[..., max(0, -t):h - max(0, -b), max(0, -l):w - max(0, -r)]
    return [F.pad(x, (max(0, l), max(0, r), max(0, t), max(0, b)))]


def _pad(attrs, ins):
    """ONNX-style pad of every axis: (begins..., ends...), negative crops, ``value`` fills."""
    x, pads, value = ins[0], attrs["pads"], attrs["value"]
    if attrs.get("mode", "constant") != "constant":
        raise ValueError(f"no PyTorch translation of pad mode {attrs['mode']!r}")
    rank = x.dim()
    los, his = pads[:rank], pads[rank:]
    out_shape = tuple(n + lo + hi for n, lo, hi in zip(x.shape, los, his))
    slices = tuple(slice(max(0, -lo), n - max(0, -hi)) for n, lo, hi in zip(x.shape, los, his))
    if any(s.stop - s.start <= 0 for s in slices):  # an axis cropped away: all fill
        return [x.new_full(out_shape, value)]
    x = x[slices]
    spec = []
    for lo, hi in zip(reversed(los), reversed(his)):  # F.pad lists the last axis first
        spec += [max(0, lo), max(0, hi)]
    return [F.pad(x, spec, value=value) if any(spec) else x]


def _matmul(attrs, ins):
    return [torch.matmul(ins[0], ins[1])]


def _softmax(attrs, ins):
    return [F.softmax(ins[0], dim=attrs["axis"])]


def _log_softmax(attrs, ins):
    return [F.log_softmax(ins[0], dim=attrs["axis"])]


def _identity(attrs, ins):
    return [ins[0]]


def _concat(attrs, ins):
    return [torch.cat(ins, dim=attrs["axis"])]


def _flatten(attrs, ins):
    x = ins[0]
    return [x.reshape(tuple(x.shape[:attrs["axis"]]) + (-1,))]


def _reshape(attrs, ins):
    x = ins[0]
    return [x.reshape((x.shape[0],) + tuple(attrs["shape"]))]


def _transpose(attrs, ins):
    return [ins[0].permute(tuple(attrs["perm"]))]


def _split(attrs, ins):
    return list(torch.split(ins[0], list(attrs["sizes"]), dim=attrs["axis"]))


def _conv2d_split(attrs, ins):
    """Merged sibling convolutions: the one convolution, its channels split into the outputs."""
    return list(torch.split(_conv2d(attrs, ins)[0], list(attrs["sizes"]), dim=1))


def _labels(labels):
    return labels.long()


def _xent(attrs, ins):
    x, labels = ins
    return [F.cross_entropy(x.double(), _labels(labels)).to(x.dtype)]


def _nll(attrs, ins):
    x, labels = ins
    return [F.nll_loss(x.double(), _labels(labels)).to(x.dtype)]


def _accuracy(attrs, ins):
    x, labels = ins
    idx = _labels(labels)
    k = min(attrs["top_k"], x.shape[1])
    higher = (x > x.gather(1, idx[:, None])).sum(dim=1)
    return [(higher < k).to(x.dtype).mean() if len(idx) else x.new_zeros(())]


def _unary(fn):
    return lambda attrs, ins: [fn(ins[0])]


UNARY: dict[str, Callable] = {
    "relu": _relu,
    "tanh": _unary(torch.tanh),
    "sigmoid": _unary(torch.sigmoid),
    "scale": _scale,
    "dropout": _identity,
    "identity": _identity,
    **{name: fn for name, fn in more.OPS.items() if name in more.ACTIVATIONS},
}


def _chain(attrs, ins):
    x = ins[0]
    for op, step_attrs in attrs["steps"]:
        x = UNARY[op](step_attrs, [x])[0]
    return [x]


STATELESS: dict[str, Callable] = {
    **UNARY,
    "conv2d": _conv2d,
    "conv2d_split": _conv2d_split,
    "dense": _dense,
    "lrn": _lrn,
    "batch_norm": _batch_norm,
    "channel_affine": _channel_affine,
    "add": _add,
    "mul": _mul,
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "concat": _concat,
    "flatten": _flatten,
    "reshape": _reshape,
    "transpose": _transpose,
    "split": _split,
    "zero_pad": _zero_pad,
    "pad": _pad,
    "matmul": _matmul,
    "elementwise_chain": _chain,
    "copy_to_device": _identity,
    "copy_to_host": _identity,
    "softmax_cross_entropy": _xent,
    "nll_loss": _nll,
    "accuracy": _accuracy,
    **more.OPS,  # the ops of issue 15 (torch_reference_more.py)
}
SUPPORTED_OPS = frozenset(STATELESS) | {"max_pool", "avg_pool"}


def _kernel(op: str):
    if op == "max_pool":
        return _Pool("max")
    if op == "avg_pool":
        return _Pool("avg")
    return STATELESS.get(op)


# ---- the module ---------------------------------------------------------------------------------
def _attr_name(name: str, taken: set) -> str:
    base = re.sub(r"\W", "_", name)
    if not base or base[0].isdigit():
        base = "p_" + base
    candidate, i = base, 1
    while candidate in taken or hasattr(nn.Module, candidate):
        candidate, i = f"{base}_{i}", i + 1
    taken.add(candidate)
    return candidate


class GraphModule(nn.Module):
    """A graphrt Graph run in PyTorch eager; see the module docstring."""

    def __init__(self, graph: graphrt.Graph):
        super().__init__()
        self.graph_name = graph.name
        self.inputs = list(graph.inputs)
        self.outputs = list(graph.outputs)
        self.input_dtypes = {t: graph.specs[t].dtype for t in graph.inputs}
        self.param_names: dict[str, str] = {}
        taken: set = set()
        used = {t for n in graph.nodes for t in n.inputs}
        for name, value in graph.params.items():
            if name not in used:
                continue
            attr = _attr_name(name, taken)
            info = graph.param_info.get(name)
            tensor = torch.from_numpy(np.array(value, copy=True))
            self.register_parameter(attr, nn.Parameter(
                tensor, requires_grad=bool(info.trainable if info else True)
                and tensor.is_floating_point()))
            self.param_names[name] = attr
        # the program: (kernel, attrs, input names, output names, tensors freed after this node)
        nodes = graph.nodes
        last_use: dict[str, int] = {}
        for i, node in enumerate(nodes):
            for t in node.inputs:
                last_use[t] = i
        keep = set(self.outputs)
        self._program = []
        self._node_names = []
        for i, node in enumerate(nodes):
            fn = _kernel(node.op)
            if fn is None:
                raise graphrt.UnsupportedError(
                    f"to_torch has no PyTorch translation for op {node.op!r} (node {node.name!r}); "
                    f"supported: {', '.join(sorted(SUPPORTED_OPS))}")
            free = tuple(t for t in dict.fromkeys(node.inputs)
                         if last_use.get(t) == i and t not in keep and t not in self.param_names)
            self._program.append((fn, dict(node.attrs), tuple(node.inputs), tuple(node.outputs),
                                  free))
            self._node_names.append(node.name)

    def _feeds(self, x) -> dict:
        if isinstance(x, Mapping):
            items = [(n, x[n]) for n in self.inputs]
        elif isinstance(x, (list, tuple)) and len(self.inputs) > 1:
            items = list(zip(self.inputs, x))
        else:
            items = [(self.inputs[0], x)]
        feeds = {}
        for name, value in items:
            if not isinstance(value, torch.Tensor):
                value = torch.from_numpy(np.ascontiguousarray(value, dtype=self.input_dtypes[name]))
            feeds[name] = value
        return feeds

    def forward(self, x, *, return_all: bool = False):
        _TRAINING[0] = self.training
        values = self._feeds(x)
        for name, attr in self.param_names.items():
            values[name] = getattr(self, attr)
        for fn, attrs, ins, outs, free in self._program:
            results = fn(attrs, [values[t] for t in ins])
            for t, v in zip(outs, results):
                values[t] = v
            if not return_all:
                for t in free:
                    del values[t]
        if return_all:
            return values
        if len(self.outputs) == 1:
            return values[self.outputs[0]]
        return {t: values[t] for t in self.outputs}

    def extra_repr(self) -> str:
        return f"graph={self.graph_name!r}, nodes={len(self._program)}, inputs={self.inputs}"


def to_torch(graph: graphrt.Graph) -> GraphModule:
    """``graph`` as a PyTorch eager module (in eval mode); see the module docstring."""
    return GraphModule(graph).eval()
