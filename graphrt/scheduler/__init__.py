"""The scheduler: programs of launches bound to arena views, the executable, the transfer ledger."""
from .executable import Executable, OutOfMemoryError, compile  # noqa: F401
from .ledger import Ledger  # noqa: F401
from .program import Launch, NumericsError, Program  # noqa: F401
