"""``@gc_paused``: run a bulk graph build with Python's cyclic garbage collector paused.

Building a graph allocates dozens of long-lived containers per node (the node, its frozen attributes,
networkx's adjacency dicts, specs, use lists). Each full collection rescans all of them and frees
nothing, so at 20,000 layers the collector took about a third of ``load`` + ``compile``
(``python bench/build_scale.py --gc-off`` shows its share). The pause covers one call and restores
the collector's previous state; nested calls leave it to the outermost. Reference counting still
frees everything acyclic as usual; cycles made meanwhile wait for the next collection.
"""
from __future__ import annotations

import functools
import gc


def gc_paused(fn):
    """Decorator: call ``fn`` with the cyclic collector disabled, then restore it."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()
    return wrapper
