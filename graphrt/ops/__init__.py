"""The op set. Each family module registers its ``OpDef`` s; :func:`get_op` looks one up."""
from .registry import REQUIRED, Attr, OpDef, OpPattern, all_ops, get_op, register  # noqa: F401
from . import conv, dense, elementwise, loss, math, norm, optim, pool, shape, softmax, transfer  # noqa: F401,E402
from . import grad, grad_spatial  # noqa: F401,E402  (the ops backward rules emit)
