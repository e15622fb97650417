"""MXNet: the symbol API as MXNet 1.x users write it, and symbols (built or loaded) as a :class:`Graph`.

Writing a net::

    from graphrt.frontends import mxnet as mx
    data = mx.sym.Variable("data")
    conv = mx.sym.Convolution(data=data, kernel=(5, 5), num_filter=20, name="conv1")
    act = mx.sym.Activation(data=conv, act_type="tanh")
    ...
    net = mx.sym.SoftmaxOutput(data=fc2, name="softmax")
    g = mx.to_graph(net, input_shape=(1, 28, 28), params="lenet-0000.params")
    net.tojson()                                  # MXNet's -symbol.json text
    same = mx.sym.load("lenet-symbol.json")       # back to a Symbol (through .io)
    g = mx.load_mxnet("lenet-symbol.json", params="lenet-0000.params", input_shape=(1, 28, 28))

Symbols behave as MXNet's: a symbol is a list of output entries of lightweight nodes that record
``op``, ``name``, the attributes exactly as given (strings such as ``"(3, 3)"``) and the inputs.
Only attributes passed explicitly are recorded (MXNet's defaults are applied when converting), so a
net written here serializes to the same JSON MXNet writes. Unnamed ops are named as MXNet names
them (``convolution0``, ``activation1``: one counter per lower-cased function name, kept by the
current :class:`NameManager`); missing parameter inputs become variables ``<name>_weight``,
``_bias``, ``_gamma``, ``_beta``, ``_moving_mean``, ``_moving_var``, ``_label``, carrying a copy of
the op's attributes as nnvm does.

Converting (:func:`to_graph`): ``null`` nodes read in a data position become graph inputs of shape
``(None,) + input_shape`` (or their ``__shape__`` attribute without its batch); those in a parameter
position become parameters, from ``params`` (a dict or a ``.params`` file; ``arg:``/``aux:``
prefixes stripped) or initialized as ``mx.init.Xavier()`` (uniform, ``avg``, magnitude 3; biases,
betas and moving means 0; gammas and moving variances 1), seeded. Parameter shapes are inferred
from the attributes and the input shapes, as MXNet's ``infer_shape`` does, and every loaded array
is checked against them. A ``SoftmaxOutput`` label is not a graph input (inference only).
Conversions with MXNet semantics worth knowing:

- ``LRN``: y = x / (knorm + alpha/nsize * sum of squares)^beta, i.e. ``lrn`` with k=knorm,
  size=nsize (knorm defaults to 2).
- ``BatchNorm``: eps defaults to 1e-3; ``fix_gamma`` (default True) means gamma is 1, whatever the
  stored value: the ``<name>_gamma`` parameter is ones and not trainable.
- ``Pooling``: ``pooling_convention='full'`` is ceil mode; ``'valid'`` (default) floor mode.
- ``FullyConnected`` flattens a >2-D input first (``flatten=True``, the default).
- ``SoftmaxOutput`` is a softmax over axis 1 (over all non-batch values for a >2-D input unless
  ``multi_output``); ``softmax`` defaults to the last axis, as in MXNet.
- ``Reshape`` understands MXNet's special values 0, -1, -2, -3, -4 and must keep the batch.
- ``_copy`` (``identity``, ``BlockGrad``) is the identity; ``clip`` is ``clip`` (ReLU6 in Gluon's
  MobileNetV2); ``broadcast_add/sub/mul/div`` broadcast; ``LeakyReLU`` also reads ``prelu``
  (a learned per-channel slope ``<name>_gamma``), ``elu``, ``selu`` and ``gelu``; ``Activation``
  also ``softrelu`` (softplus) and ``softsign``.

Every error is a :class:`~graphrt.GraphrtError` naming the node, its op and the JSON file and line
where known.
"""
from __future__ import annotations

# A facade over modules split by responsibility: naming (auto-naming), symbol (Symbol and mx.sym),
# symbol_json (writing -symbol.json), ops (each op's signature and converter), reshape (Reshape's
# shape rule), initializers (mx.init), params (parameter values), io (reading .params and JSON) and
# convert (to_graph, load_mxnet).
from .convert import load_mxnet, to_graph
from .initializers import (Constant, Initializer, Normal, One, Uniform, Xavier, Zero,  # noqa: F401
                           init)
from .io import SymbolGraph, SymbolNode  # noqa: F401
from .symbol_json import MXNET_VERSION, symbol_graph_to_json  # noqa: F401
from .naming import NameManager, Prefix, name
from .ops import ALIASES, CONV_ATTRS, OPS, OpSpec, op_spec  # noqa: F401
from .reshape import mxnet_reshape
from .symbol import (Group, Symbol, Variable, load, load_json, sym, symbol,  # noqa: F401
                     symbol_from_graph)

__all__ = ["sym", "symbol", "name", "init", "Symbol", "Variable", "Group", "load", "load_json",
           "to_graph", "load_mxnet", "NameManager", "Prefix", "Xavier", "OPS", "mxnet_reshape"]
