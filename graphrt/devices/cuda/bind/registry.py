"""The CUDA kernels of the ``cuda`` device and :func:`bind`, which turns a launch (``op, attrs,
inputs, outputs, workspace``) into kernel calls with every argument resolved.

Nothing here imports CuPy. The sources (``kernels/*.cu``, see :mod:`graphrt.devices.cuda.sources`)
are compiled once per dtype by NVRTC through ``cupy.RawModule`` on a GPU, by ``nvcc`` in the compile
test, and by the host C++ compiler for the emulated device that runs these very kernels on the CPU
in tests. Each op family's binders are in a module of their own:

- :mod:`~graphrt.devices.cuda.bind.elementwise`: ``ew_unary`` (a run of up to 4 unary steps over a
  strided tensor of rank <= 6: ``relu``, ``tanh``, ``sigmoid``, ``scale``, ``dropout``,
  ``identity``, ``elementwise_chain``), ``ew_nary`` (``add`` with coefficients and ``mul`` of up to
  4 broadcast inputs per launch), ``copy_nd`` (``concat``/``split`` when the plan did not alias
  them, ``flatten``/``reshape`` of strided views, ``transpose``) and ``pad_nd`` (``zero_pad``,
  ``pad``).
- :mod:`~graphrt.devices.cuda.bind.gemm`: ``conv2d`` (``im2col`` + GEMM; groups, stride, padding,
  dilation; 1x1 convolutions with stride 1 and no padding skip the im2col), ``dense``, ``matmul``.
  A GEMM runs through cuBLAS + the ``bias_act`` epilogue, or our tiled ``gemm`` kernel with the
  epilogue fused (see :mod:`~graphrt.devices.cuda.runtime.gemm`).
- :mod:`~graphrt.devices.cuda.bind.norm`: ``pool2d`` (``max_pool``/``avg_pool``), ``lrn`` (in double
  precision as the reference), ``bn_coeffs`` + ``channel_affine`` (``batch_norm``,
  ``channel_affine``), ``softmax`` (``softmax``/``log_softmax`` along any axis).
- :mod:`~graphrt.devices.cuda.bind.train`: ``class_loss`` (``softmax_cross_entropy``, ``nll_loss``,
  ``accuracy``; an invalid label gives NaN — a GPU kernel cannot raise), ``sgd_update`` and
  ``counter_inc`` (the optimizer step with Caffe's lr policies read from the device-resident
  iteration counter, and the counter itself).

Every array argument is a pointer plus strides in elements, so any view of the arena — a concat
branch's channel slice, a transposed view — is read and written in place. Ops without a binder
here (or a layout/dtype a kernel does not take: a rank above 6, float16) run their reference
forward on the device arrays (CuPy implements the numpy calls they make); such a step is not
captured into a CUDA graph.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ....ops import get_op
from ..calls import Fallback, Unsupported
from .elementwise import (bind_concat, bind_copy, bind_nary, bind_pad, bind_split, bind_transpose,
                          bind_unary, bind_zero_pad)
from .gemm import bind_conv2d, bind_dense, bind_matmul, conv_workspace_bytes
from .norm import bind_batch_norm, bind_channel_affine, bind_lrn, bind_pool, bind_softmax
from .train import bind_counter, bind_loss, bind_sgd

BINDERS: dict[str, Callable] = {
    **{op: bind_unary(op) for op in ("relu", "tanh", "sigmoid", "scale", "dropout", "identity",
                                     "elementwise_chain")},
    "add": bind_nary("add"), "mul": bind_nary("mul"),
    "concat": bind_concat, "split": bind_split, "flatten": bind_copy, "reshape": bind_copy,
    "transpose": bind_transpose, "copy_to_device": bind_copy, "copy_to_host": bind_copy,
    "zero_pad": bind_zero_pad, "pad": bind_pad,
    "conv2d": bind_conv2d, "dense": bind_dense, "matmul": bind_matmul,
    "max_pool": bind_pool("max_pool"), "avg_pool": bind_pool("avg_pool"), "lrn": bind_lrn,
    "batch_norm": bind_batch_norm, "channel_affine": bind_channel_affine,
    "softmax": bind_softmax("softmax"), "log_softmax": bind_softmax("log_softmax"),
    "softmax_cross_entropy": bind_loss("softmax_cross_entropy"), "nll_loss": bind_loss("nll_loss"),
    "accuracy": bind_loss("accuracy"), "sgd_update": bind_sgd, "step_counter": bind_counter,
}


def bind(op: str, attrs, inputs, outputs, ws) -> list:
    """The calls that run ``op``, or one :class:`Fallback` (reference forward on device arrays)
    where no binder exists or a binder cannot express these arrays."""
    binder = BINDERS.get(op)
    reason = "no cuda kernel for this op"
    if binder is not None:
        try:
            return binder(attrs, inputs, outputs, ws)
        except Unsupported as err:
            reason = str(err)
    return [Fallback(op, get_op(op).forward, attrs, inputs, outputs, reason)]


def workspace_bytes(node, graph, batch: int) -> int:
    """Scratch bytes the node's calls use (planned in the arena)."""
    specs = graph.specs
    if node.op == "conv2d":
        x = specs[node.inputs[0]]
        n, c, h, w = x.concrete(batch)
        o, cg, kh, kw = specs[node.inputs[1]].shape
        oh, ow = specs[node.outputs[0]].shape[2:]
        itemsize = np.dtype(x.dtype).itemsize
        return conv_workspace_bytes(n, c, o, cg, kh, kw, oh, ow, node.attrs, itemsize)
    if node.op == "batch_norm":
        x = specs[node.inputs[0]]
        return 2 * x.shape[1] * np.dtype(x.dtype).itemsize
    return 0
