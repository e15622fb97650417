"""Property-based correctness testing for graphrt graphs and users' own models.

Owns the hypothesis strategies (``strategies``: random Sequential and inception graphs, tensors,
feeds), :func:`assert_equivalent` (``equivalence``: reference vs compiled, every level and device)
and the pytest plugin (``plugin``, registered through the ``pytest11`` entry point). Built on the
public API only (``ir``, ``ops``, ``devices``, ``scheduler``); hypothesis and pytest are imported when
used, not when this package is::

    from hypothesis import given
    from graphrt.testing import sequential_graphs, assert_equivalent

    @given(sequential_graphs(max_nodes=6))
    def test_my_passes(graph):
        assert_equivalent(graph)
"""
from .equivalence import (as_float64, assert_equivalent, available_devices,  # noqa: F401
                          first_divergence, relative_error)
from .strategies import inception_graphs, inputs_for, sequential_graphs, tensors  # noqa: F401

__all__ = ["tensors", "sequential_graphs", "inception_graphs", "inputs_for", "assert_equivalent",
           "relative_error", "first_divergence", "available_devices", "as_float64"]
