"""The scheduler: an optimized, placed graph and its memory plan compiled into a flat program of
launches bound to arena views (``program``), the :class:`Executable` that runs it (``executable``)
with pinned-buffer prefetch (``prefetch``), the transfer ledger (``ledger``), deferred Ctrl-C during
state updates (``interrupts``) and the naive per-op executor ``graphrt profile --naive`` compares
with (``naive``). Imports ``ir``, ``ops``, ``passes``, ``memory`` and the device protocol
(``devices.base``, devices found by name through ``devices.registry``), never an implementation.
"""
from .executable import Executable, OutOfMemoryError, compile  # noqa: F401
from .ledger import Ledger  # noqa: F401
from .program import Launch, NumericsError, Program  # noqa: F401
