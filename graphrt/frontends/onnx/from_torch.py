"""``graphrt.from_torch(module, example_input)``: a PyTorch ``nn.Module`` as a :class:`Graph`,
through PyTorch's own ONNX exporter.

    g = graphrt.from_torch(model.eval(), torch.randn(8, 3, 32, 32))
    y = graphrt.compile(g)(x)                 # the same outputs as model(x)

The path is PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, opset
17): it needs only ``torch`` and ``onnx``, where PyTorch 2.13's default exporter (``dynamo=True``)
also needs ``onnxscript``. The module is traced on ``example_input`` (a tensor or a tuple of
tensors) with the first dimension of every input and output marked dynamic, and the ONNX model is
read by :func:`graphrt.frontends.onnx.load_onnx` with the example's batch as the exported batch, so
the graph's batch is symbolic. Parameters keep PyTorch's names (``conv1.weight``); the module is
put in eval mode for the export and restored after. ``torch`` is imported only here.
"""
from __future__ import annotations

import inspect
import io
import warnings

from ...ir.errors import GraphrtError, UnsupportedError
from ...ir import Graph

OPSET = 17


def _as_tuple(example) -> tuple:
    return tuple(example) if isinstance(example, (tuple, list)) else (example,)


def _positional(module, torch):
    """The TorchScript exporter passes a forward's keyword-only parameters positionally (and fails):
    such a module is wrapped in one whose forward takes exactly the example's tensors."""
    params = inspect.signature(module.forward).parameters.values()
    if not any(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params):
        return module

    class Positional(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(*args)

    return Positional(module)


def from_torch(module, example_input, *, input_names=None, output_names=None) -> Graph:
    """Export ``module`` with PyTorch's ONNX exporter and convert the model into a Graph.

    ``input_names`` / ``output_names`` name the graph's inputs and outputs (default ``input`` /
    ``output`` for one, ``input0``, ``input1``, ... for several).
    """
    try:
        import torch
    except ImportError:
        raise UnsupportedError("from_torch needs PyTorch (pip install torch)") from None
    from .importer import load_onnx

    if not isinstance(module, torch.nn.Module):
        raise GraphrtError(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
    args = _as_tuple(example_input)
    if not args or not all(isinstance(a, torch.Tensor) and a.dim() >= 1 for a in args):
        raise GraphrtError("example_input must be a tensor (or a tuple of tensors) whose first "
                           "dimension is the batch")
    input_names = list(input_names or (["input"] if len(args) == 1 else
                                       [f"input{i}" for i in range(len(args))]))
    with torch.no_grad():
        outputs = _as_tuple(module(*args))
    output_names = list(output_names or (["output"] if len(outputs) == 1 else
                                         [f"output{i}" for i in range(len(outputs))]))
    dynamic = {name: {0: "batch"} for name in input_names + output_names}
    buffer = io.BytesIO()
    training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
            torch.onnx.export(_positional(module, torch), args, buffer, dynamo=False, opset_version=OPSET,
                              input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic, do_constant_folding=True)
    except Exception as err:  # the exporter raises many types for unsupported modules
        raise UnsupportedError(f"PyTorch's ONNX exporter failed on {type(module).__name__}: "
                               f"{type(err).__name__}: {err}") from None
    finally:
        module.train(training)
    graph = load_onnx(buffer.getvalue(), batch_size=int(args[0].shape[0]))
    graph.name = type(module).__name__
    return graph
