"""MXNet's automatic naming of unnamed ops: ``hint + counter``, one counter per hint.

The active :class:`NameManager` is thread-local; entering one (``with mx.name.NameManager():``)
starts fresh counters, as a new MXNet process does::

    with mx.name.NameManager():
        mx.sym.Convolution(data=data, kernel=(3, 3), num_filter=8).name   # 'convolution0'
    with mx.name.Prefix("stage1_"):
        mx.sym.Activation(data=data, act_type="relu").name                # 'stage1_activation0'
"""
from __future__ import annotations

import threading
import types


class NameManager:
    """MXNet's automatic naming: ``hint + counter`` per hint; use as a context manager."""

    _state = threading.local()

    def __init__(self):
        self._counter: dict[str, int] = {}
        self._old: NameManager | None = None

    def get(self, name: str | None, hint: str) -> str:
        """``name`` when given, else the next ``hint<counter>``."""
        if name:
            return name
        count = self._counter.get(hint, 0)
        self._counter[hint] = count + 1
        return f"{hint}{count}"

    def __enter__(self):
        self._old = NameManager.current()
        NameManager._state.value = self
        return self

    def __exit__(self, *exc):
        NameManager._state.value = self._old

    @staticmethod
    def current() -> "NameManager":
        """The active manager of this thread (a default one is made on first use)."""
        if getattr(NameManager._state, "value", None) is None:
            NameManager._state.value = NameManager()
        return NameManager._state.value


class Prefix(NameManager):
    """Prefix every name made while active (``with mx.name.Prefix("stage1_"): ...``)."""

    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = prefix

    def get(self, name: str | None, hint: str) -> str:
        return self._prefix + super().get(name, hint)


name = types.SimpleNamespace(NameManager=NameManager, Prefix=Prefix)
