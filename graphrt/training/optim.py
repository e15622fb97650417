"""Optimizers for :class:`graphrt.Trainer` (``graphrt.optim.SGD``)."""
from .autodiff import SGD  # noqa: F401
