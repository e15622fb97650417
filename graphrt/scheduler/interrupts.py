"""Steps that update state run whole: a Ctrl-C that arrives during one is held until it ends.

A training step updates every parameter in place; stopping it half-way would leave some layers
updated and others not. :func:`deferred_interrupt` installs a SIGINT handler for the duration of the
block (main thread only; elsewhere signals cannot arrive anyway) and raises the KeyboardInterrupt as
soon as the block is done, so the parameters always correspond to a whole number of steps.
"""
from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def deferred_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    try:
        previous = signal.signal(signal.SIGINT, lambda sig, frame: received.append(sig))
    except (ValueError, OSError):  # an embedding interpreter without signal support
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt
