"""Memory planning: every activation, gradient and workspace of a step gets an offset in one arena
before the first run — liveness from the schedule, offsets by greedy best fit, in-place outputs and
concat inputs aliased into their consumer (see :mod:`.planner`). A plan is data; applying it
(:func:`make_views`) is a separate step. Imports ``ir`` and ``ops``.
"""
from .planner import (ALIGNMENT, INPUTS, Block, MemoryPlan, View, align, format_bytes,  # noqa: F401
                      is_input_copy, make_views, plan_memory)
