"""Memory planning: one arena, offsets by liveness (see :mod:`.planner`)."""
from .planner import ALIGNMENT, INPUTS, Block, MemoryPlan, View, align, make_views, plan_memory  # noqa: F401
