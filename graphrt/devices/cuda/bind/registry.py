"""The CUDA kernels of the ``cuda`` device and :func:`bind`, which turns a launch (``op, attrs,
inputs, outputs, workspace``) into kernel calls with every argument resolved.

Nothing here imports CuPy. The sources (``kernels/*.cu``, see :mod:`graphrt.devices.cuda.sources`)
are compiled once per dtype by NVRTC through ``cupy.RawModule`` on a GPU, by ``nvcc`` in the compile
test, and by the host C++ compiler for the CUDA stand-in that runs these very kernels on the CPU in
tests. Each op family's binders are in a module of their own:

- :mod:`~graphrt.devices.cuda.bind.elementwise`: ``ew_unary`` (a run of up to 4 unary steps over a
  strided tensor of rank <= 6: ``relu``, ``tanh``, ``sigmoid``, ``scale``, ``dropout``,
  ``identity``, the activations of :mod:`graphrt.ops.activation`, ``elementwise_chain``),
  ``ew_nary`` (``add`` with coefficients, ``mul``, ``maximum``, ``minimum`` of up to 4 broadcast
  inputs per launch; ``sub``, ``div``, ``pow``, ``prelu``), ``ew_compare`` (``equal``,
  ``greater``, ``less``, ``greater_equal``, ``less_equal`` of float inputs into bool),
  ``ew_where`` (``where``, a condition of any numeric dtype), ``copy_nd`` (``concat``/``split``
  when the plan did not alias them, ``flatten``/``reshape`` of strided views, ``transpose``) and
  ``pad_nd`` (``zero_pad``, ``pad``).
- :mod:`~graphrt.devices.cuda.bind.gemm`: ``conv2d`` (``im2col`` + GEMM; groups, stride, padding,
  dilation; 1x1 convolutions with stride 1 and no padding skip the im2col), ``conv2d_split`` (merged
  sibling convolutions: one GEMM per output, into it), ``dense``, ``matmul``.
  A GEMM runs through cuBLAS + the ``bias_act`` epilogue, or our tiled ``gemm`` kernel with the
  epilogue fused (see :mod:`~graphrt.devices.cuda.runtime.gemm`).
- :mod:`~graphrt.devices.cuda.bind.norm`: ``pool2d`` (``max_pool``/``avg_pool``), ``lrn`` (in double
  precision as the reference), ``bn_coeffs`` + ``channel_affine`` (``batch_norm``,
  ``channel_affine``), ``softmax`` (``softmax``/``log_softmax`` along any axis).
- :mod:`~graphrt.devices.cuda.bind.train`: ``class_loss`` (``softmax_cross_entropy``, ``nll_loss``,
  ``accuracy``; an invalid label gives NaN — a GPU kernel cannot raise), ``sgd_update`` and
  ``counter_inc`` (the optimizer step with Caffe's lr policies read from the device-resident
  iteration counter, and the counter itself).
- :mod:`~graphrt.devices.cuda.bind.grad`: the training step's gradient ops (convolution's data
  gradient as GEMMs + ``col2im``, its weight gradient as ``im2col`` + GEMMs, dense gradients,
  pooling/LRN/batch-norm backward, softmax and loss gradients, elementwise gradients with
  ``unary_grad`` and ``binary_grad``, channel sums), ``batch_norm_train`` with its running
  averages, and ``dropout_train`` (Philox4x32-10 on the device, no host mask).
- :mod:`~graphrt.devices.cuda.bind.solvers`: ``solver_update`` (Caffe's SGD, Nesterov and Adam,
  L1 or L2 regularization, the rate from the iteration counter).
- :mod:`~graphrt.devices.cuda.bind.image`: ``image_transform`` (a data source's uint8 batch cropped,
  mirrored, mean-subtracted, scaled and cast in one pass).
- :mod:`~graphrt.devices.cuda.bind.index`: ``slice``, ``expand``, ``tile`` (``copy_nd`` of strided
  views), ``cast`` (``cast_nd``), ``embedding``, ``embedding_grad``, ``pad_grad``.
- :mod:`~graphrt.devices.cuda.bind.reduce`: ``reduce``, ``reduce_like``, ``reduce_grad``,
  ``arg_reduce``, ``layer_norm``, ``layer_norm_grad`` (rows of kept x reduced axes).
- :mod:`~graphrt.devices.cuda.bind.resize`: ``resize``, ``resize_grad`` (a GEMM per spatial axis).
- :mod:`~graphrt.devices.cuda.bind.adjoint`: ``conv2d_transpose``, ``matmul_grad`` (GEMMs).

``all_reduce`` runs on the device for a group of one (no communicator registered for its group:
the reduction is the identity, so the binder only copies where the plan did not alias a gradient
into its bucket range); a group with a communicator (torch.distributed's, a host call) keeps the
node on the host, and a communicator registered after the first step is refused at the next
(:meth:`~graphrt.devices.cuda.device.CudaDevice.run_program`).

Every array argument is a pointer plus strides in elements, so any view of the arena — a concat
branch's channel slice, a transposed view — is read and written in place. :func:`unsupported` says,
from a node's op and tensor specs, whether these kernels run it (an op without a binder, a dtype or
rank a kernel does not take: float16, rank 7); placement puts the nodes it refuses on the host, with
explicit copies, and warns. Nothing falls back at bind time: a launch a binder still cannot express
(a strided view no kernel walks) is a :class:`~graphrt.ir.errors.UnsupportedError` naming the node.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ....ops.collective import COMMUNICATORS
from ..calls import MAX_RANK, Unsupported, num_elements
from .elementwise import (COMPARE_CODES, INPUTS_PER_LAUNCH, NARY_CODES, UNARY_CODES,
                          bind_all_reduce, bind_compare, bind_concat, bind_copy, bind_nary,
                          bind_pad, bind_split, bind_transpose, bind_unary, bind_where,
                          bind_zero_pad)
from .gemm import bind_conv2d, bind_conv2d_split, bind_dense, bind_matmul, conv_workspace_bytes
from .grad import BINDERS as GRAD_BINDERS
from .grad import conv_grad_workspace_bytes
from .adjoint import BINDERS as ADJOINT_BINDERS
from .adjoint import conv2d_transpose_workspace_bytes
from .image import bind_image_transform
from .index import BINDERS as INDEX_BINDERS
from .index import embedding_grad_workspace_bytes, pad_grad_workspace_bytes
from .reduce import BINDERS as REDUCE_BINDERS
from .reduce import ln_workspace_bytes
from .resize import BINDERS as RESIZE_BINDERS
from .resize import resize_workspace_bytes
from .solvers import bind_solver
from .norm import bind_batch_norm, bind_channel_affine, bind_lrn, bind_pool, bind_softmax
from .train import LABEL_KINDS, bind_counter, bind_loss, bind_sgd

BINDERS: dict[str, Callable] = {
    **{op: bind_unary(op) for op in (*UNARY_CODES, "elementwise_chain")},
    **{op: bind_nary(op) for op in NARY_CODES}, **{op: bind_compare(op) for op in COMPARE_CODES},
    "where": bind_where, "all_reduce": bind_all_reduce,
    "concat": bind_concat, "split": bind_split, "flatten": bind_copy, "reshape": bind_copy,
    "transpose": bind_transpose, "copy_to_device": bind_copy, "copy_to_host": bind_copy,
    "zero_pad": bind_zero_pad, "pad": bind_pad,
    "conv2d": bind_conv2d, "conv2d_split": bind_conv2d_split, "dense": bind_dense,
    "matmul": bind_matmul,
    "max_pool": bind_pool("max_pool"), "avg_pool": bind_pool("avg_pool"), "lrn": bind_lrn,
    "batch_norm": bind_batch_norm, "channel_affine": bind_channel_affine,
    "softmax": bind_softmax("softmax"), "log_softmax": bind_softmax("log_softmax"),
    "softmax_cross_entropy": bind_loss("softmax_cross_entropy"), "nll_loss": bind_loss("nll_loss"),
    "accuracy": bind_loss("accuracy"), "sgd_update": bind_sgd, "step_counter": bind_counter,
    **GRAD_BINDERS,
    "image_transform": bind_image_transform, "solver_update": bind_solver,
    **INDEX_BINDERS, **REDUCE_BINDERS, **ADJOINT_BINDERS, **RESIZE_BINDERS,
}


def bind(op: str, attrs, inputs, outputs, ws) -> list:
    """The calls that run ``op`` on these arrays; :class:`Unsupported` where the kernels cannot."""
    binder = BINDERS.get(op)
    if binder is None:
        raise Unsupported(f"no cuda kernel for {op}")
    return binder(attrs, inputs, outputs, ws)


# ---- what placement asks -----------------------------------------------------------------------
FLOATS = ("float32", "float64")


def unsupported(node, graph) -> str | None:
    """Why the kernels cannot run ``node`` (None: they can), from its op, attributes and tensor
    specs; the ``place`` pass puts such a node on the host."""
    if node.op not in BINDERS:
        return f"no cuda kernel for {node.op}"
    ins = [graph.specs[t] for t in node.inputs]
    outs = [graph.specs[t] for t in node.outputs]
    check = CHECKS.get(node.op)
    return check(node, ins, outs) if check else _floats(ins + outs)


def _floats(specs) -> str | None:
    dtypes = sorted({s.dtype for s in specs})
    if not set(dtypes) <= set(FLOATS) or len(dtypes) > 1:
        return f"the kernels take tensors of one dtype, float32 or float64, not {', '.join(dtypes)}"
    rank = max((len(s.shape) for s in specs), default=0)
    return f"rank {rank} (the kernels take up to {MAX_RANK})" if rank > MAX_RANK else None


def _ranked(lo: int, hi: int):
    def check(node, ins, outs):
        rank = len(ins[0].shape)
        if not lo <= rank <= hi:
            return f"a rank-{rank} input (the {node.op} kernel takes rank {lo} to {hi})"
        return _floats(ins + outs)
    return check


def _loss(node, ins, outs):
    x, labels = ins
    if len(x.shape) != 2:
        return f"a rank-{len(x.shape)} input (the loss kernel takes (N, C))"
    if labels.dtype not in LABEL_KINDS:
        return f"labels of dtype {labels.dtype}"
    return _floats([x] + outs)


def _loss_grad(node, ins, outs):
    labels = ins[0] if node.op == "nll_loss_grad" else ins[1]
    if labels.dtype not in LABEL_KINDS:
        return f"labels of dtype {labels.dtype}"
    return _floats([s for s in ins if s is not labels] + outs)


def _dropout(node, ins, outs):
    if ins[1].dtype != "int64" or ins[1].nbytes(1) != 8:
        return "a dropout step counter that is not one int64"
    if node.attrs.get("offset", 0):
        return "a dropout offset (a data-parallel rank's rows of the global batch's mask)"
    return _floats([ins[0]] + outs)


def _counter(spec) -> str | None:
    if spec.dtype != "float64" or spec.nbytes(1) != 8:
        return "an iteration counter that is not one float64"
    return None


def _sgd(node, ins, outs):
    if len(node.attrs["stepvalues"]) > 8:
        return f"{len(node.attrs['stepvalues'])} step values (the kernel takes up to 8)"
    return _counter(ins[3]) or _floats(ins[:3])


def _solver(node, ins, outs):
    if len(node.attrs["stepvalues"]) > 8:
        return f"{len(node.attrs['stepvalues'])} step values (the kernel takes up to 8)"
    return _counter(ins[4]) or _floats(ins[:4])


def _image(node, ins, outs):
    if ins[0].dtype not in ("uint8", "float32") or ins[1].dtype != "int32":
        return f"images of dtype {ins[0].dtype} with a window of dtype {ins[1].dtype}"
    return _floats(outs + ins[2:])


def _compare(node, ins, outs):
    if outs[0].dtype != "bool":
        return f"a comparison into {outs[0].dtype}"
    return _floats(ins)


def _where(node, ins, outs):
    if ins[0].dtype not in LABEL_KINDS:
        return f"a condition of dtype {ins[0].dtype}"
    return _floats(ins[1:] + outs)


def _binary_grad(node, ins, outs):
    if len(ins) > 1 + INPUTS_PER_LAUNCH:
        return f"{len(ins) - 1} inputs (the binary_grad kernel takes up to {INPUTS_PER_LAUNCH})"
    kinds = [s.dtype for s in ins[1:] if s.dtype not in LABEL_KINDS]
    return f"inputs of dtype {', '.join(kinds)}" if kinds else _floats(ins[:1] + outs)


def _cast(node, ins, outs):
    if ins[0].dtype not in LABEL_KINDS:
        return f"a cast from {ins[0].dtype}"
    return _floats(outs)  # (of the input's rank)


def _indices(position: int):
    """An op with integer (or float) indices at input ``position``, floats elsewhere."""
    def check(node, ins, outs):
        idx = ins[position]
        if idx.dtype not in LABEL_KINDS:
            return f"indices of dtype {idx.dtype}"
        if len(idx.shape) > MAX_RANK:
            return f"rank-{len(idx.shape)} indices (the kernels take up to {MAX_RANK})"
        return _floats([s for i, s in enumerate(ins) if i != position] + outs)
    return check


def _all_reduce(node, ins, outs):
    if node.attrs["group"] in COMMUNICATORS:
        return (f"group {node.attrs['group']!r} has a communicator: its reduction is a host call "
                "(the cuda device runs a group of one)")
    return _floats(ins + outs)


def _arg_reduce(node, ins, outs):
    if outs[0].dtype != "int64":
        return f"indices of dtype {outs[0].dtype}"
    return _floats(ins)


CHECKS = {
    "max_pool": _ranked(4, 4), "avg_pool": _ranked(4, 4), "lrn": _ranked(4, 4),
    "conv2d": _ranked(4, 4), "conv2d_split": _ranked(4, 4), "dense": _ranked(2, 2),
    "batch_norm": _ranked(2, 4), "channel_affine": _ranked(2, 4), "softmax_cross_entropy": _loss,
    "nll_loss": _loss, "accuracy": _loss, "sgd_update": _sgd, "step_counter": lambda node, ins, outs: _counter(ins[0]),
    "softmax_cross_entropy_grad": _loss_grad, "nll_loss_grad": _loss_grad,
    "dropout_train": _dropout, "reduce_channels": _ranked(2, 4),
    "conv2d_grad_input": _ranked(4, 4), "conv2d_grad_weight": _ranked(4, 4),
    "dense_grad_input": _ranked(2, 2), "dense_grad_weight": _ranked(2, 2),
    "max_pool_grad": _ranked(4, 4), "avg_pool_grad": _ranked(4, 4), "lrn_grad": _ranked(4, 4),
    "batch_norm_train": _ranked(2, 4), "batch_norm_train_grad": _ranked(2, 4),
    "image_transform": _image, "solver_update": _solver,
    **{op: _compare for op in COMPARE_CODES}, "where": _where, "binary_grad": _binary_grad,
    "cast": _cast, "embedding": _indices(0), "embedding_grad": _indices(1),
    "arg_reduce": _arg_reduce, "conv2d_transpose": _ranked(4, 4), "all_reduce": _all_reduce,
}


def workspace_bytes(node, graph, batch: int) -> int:
    """Scratch bytes the node's calls use (planned in the arena)."""
    specs = graph.specs
    if node.op in ("conv2d", "conv2d_split"):
        x = specs[node.inputs[0]]
        n, c, h, w = x.concrete(batch)
        o, cg, kh, kw = specs[node.inputs[1]].shape
        oh, ow = specs[node.outputs[0]].shape[2:]
        itemsize = np.dtype(x.dtype).itemsize
        return conv_workspace_bytes(n, c, o, cg, kh, kw, oh, ow, node.attrs, itemsize)
    if node.op in ("conv2d_grad_input", "conv2d_grad_weight"):
        dx = specs[node.outputs[0]] if node.op == "conv2d_grad_input" else specs[node.inputs[0]]
        n, c, _, _ = dx.concrete(batch)
        kh, kw = specs[node.inputs[1]].shape[2:] if node.op == "conv2d_grad_input" \
            else node.attrs["kernel"]
        dy = specs[node.inputs[0] if node.op == "conv2d_grad_input" else node.inputs[1]]
        o, oh, ow = dy.shape[1:]
        return conv_grad_workspace_bytes(node.op, n, c, o, kh, kw, oh, ow,
                                         np.dtype(dy.dtype).itemsize)
    if node.op in ("layer_norm", "layer_norm_grad"):
        x = specs[node.inputs[0 if node.op == "layer_norm" else 1]]
        return ln_workspace_bytes(x.concrete(batch), node.attrs)
    if node.op == "embedding_grad":
        idx = specs[node.inputs[1]]
        return embedding_grad_workspace_bytes(node.attrs["rows"], num_elements(idx.concrete(batch)))
    if node.op == "pad_grad":
        dy = specs[node.inputs[0]]
        return pad_grad_workspace_bytes(dy.concrete(batch), np.dtype(dy.dtype).itemsize)
    if node.op in ("resize", "resize_grad"):
        x, y = specs[node.inputs[0]], specs[node.outputs[0]]
        src, dst = x.concrete(batch), y.concrete(batch)
        return resize_workspace_bytes(src[:2], src[2:], dst[2:], np.dtype(x.dtype).itemsize)
    if node.op == "conv2d_transpose":
        x = specs[node.inputs[0]]
        return conv2d_transpose_workspace_bytes(
            x.concrete(batch), specs[node.inputs[1]].shape, specs[node.outputs[0]].concrete(batch),
            np.dtype(x.dtype).itemsize)
    if node.op == "batch_norm":
        x = specs[node.inputs[0]]
        return 2 * x.shape[1] * np.dtype(x.dtype).itemsize
    return 0
