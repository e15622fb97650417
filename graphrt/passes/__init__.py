"""Optimization passes: pure ``Graph -> Graph`` functions, one per module, and the default pipeline.

| level | passes |
|-------|--------|
| 0     | (none; ``place`` always runs when compiling) |
| 1     | eliminate_dead_code, remove_identities |
| 2     | fold_scale, fold_batchnorm, fuse_conv_activation, fuse_elementwise |
| 3     | merge_sibling_convs, alias_concat |

Levels are cumulative: level 3 runs everything. ``pipeline`` holds the registry, :class:`Pipeline`,
:class:`PassContext` and the instruments; ``place`` puts each node on the device, or on the host
where the device cannot run it, and makes every host<->device copy explicit. Imports ``ir`` and
``ops``.
"""
from .pipeline import (PASSES, GraphDumper, Pass, PassContext, PassError,  # noqa: F401
                       PassInstrument, PassTimer, Pipeline, register_pass, to_dot)
from . import (alias_concat, eliminate_dead_code, fold_batchnorm, fold_scale,  # noqa: F401,E402
               fuse_conv_activation, fuse_elementwise, merge_sibling_convs, place,
               remove_identities)
from .place import host_nodes, place_on  # noqa: F401,E402

OPTIMIZE = ["eliminate_dead_code", "remove_identities", "fold_scale", "fold_batchnorm",
            "fuse_conv_activation", "fuse_elementwise", "merge_sibling_convs", "alias_concat"]


def optimize(graph, opt_level: int = 2, *, disabled=(), instruments=(), debug: bool = False):
    """Run the default pipeline up to ``opt_level`` (without placement)."""
    ctx = PassContext(opt_level=opt_level, disabled=disabled, instruments=instruments, debug=debug)
    return Pipeline(OPTIMIZE)(graph, ctx)
