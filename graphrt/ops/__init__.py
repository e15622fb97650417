"""The op set: one :class:`OpDef` per op in its family module (``conv``, ``pool``, ``elementwise``,
``norm``, ``grad``, ...), declaring together its attributes, shape/dtype inference, numpy reference
forward, backward (VJP) rule, cost, fusion pattern and in-place rule; the families listed below
register their ops into the IR's op table when this package is imported, and :func:`get_op` looks
one up. Also the reference executor (``reference``: any graph run with the ops' numpy forwards).
Imports ``ir`` only.
"""
from .registry import REQUIRED, Attr, OpDef, OpPattern, all_ops, get_op, register  # noqa: F401
from . import conv, dense, elementwise, loss, math, norm, optim, pool, shape, softmax, transfer  # noqa: F401,E402
from . import activation, binary, collective, deconv, image, index, layer_norm, reduce, resize  # noqa: F401,E402
from . import solvers  # noqa: F401,E402
from . import grad, grad_spatial  # noqa: F401,E402  (the ops backward rules emit)
