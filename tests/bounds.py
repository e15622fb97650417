"""Machine-independent cost bounds for tests, instead of wall-clock thresholds: how many Python
function calls a piece of code makes (a decoder looping over every number in Python makes one or more
per number; a loop that rescans its input grows faster than the input) and the most memory it holds
at once (a size check that runs before allocating holds almost none)."""
from __future__ import annotations

import sys
import tracemalloc
from typing import Callable


def python_calls(fn: Callable[[], object]) -> int:
    """Python and C function calls made while ``fn()`` runs (exceptions propagate after counting)."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def peak_bytes(fn: Callable[[], object]) -> int:
    """The most memory (bytes traced by tracemalloc) held at once while ``fn()`` runs, whether it
    returns or raises (the exception is swallowed: check it separately)."""
    tracemalloc.start()
    try:
        fn()
    except Exception:  # noqa: BLE001 - only the memory is measured here
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak
