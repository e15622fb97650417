"""Training: the same graph with its backward pass and optimizer updates appended.

Owns autodiff (``autodiff``: training forms of dropout and batch norm, every op's VJP rule applied
in reverse, one ``sgd_update`` per parameter), the optimizers (``optim``), :class:`Trainer`
(``trainer``: step, fit, evaluate, save/load through graphrt's ``.npz`` format) and the bundled
example data (``datasets``). May import ``ir``, ``ops``, ``passes``, ``memory``, ``scheduler`` and
``frontends`` (checkpoints are graphrt's ``.npz`` format, read by ``frontends.npz``).
"""
from . import optim  # noqa: F401
from .autodiff import SGD  # noqa: F401
from .trainer import Trainer  # noqa: F401
