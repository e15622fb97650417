"""A pytest plugin (registered through the ``pytest11`` entry point) so that a user's test of their
own model is a few lines::

    def test_my_model(graphrt_equivalence):
        graphrt_equivalence(my_keras_model)            # reference vs compiled, every level and device

Fixtures: ``graphrt_equivalence`` (:func:`graphrt.testing.assert_equivalent` with the options given on
the command line). Options: ``--graphrt-devices cpu,cuda`` (default: every available device) and
``--graphrt-rtol 1e-4``. Hypothesis profiles ``graphrt-ci`` (deterministic, 50 examples) and
``graphrt-thorough`` (1,000 examples) are registered; pick one with ``--hypothesis-profile``.
"""
from __future__ import annotations

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("graphrt")
    group.addoption("--graphrt-devices", default=None,
                    help="comma-separated devices for graphrt_equivalence (default: all available)")
    group.addoption("--graphrt-rtol", type=float, default=1e-4,
                    help="relative error bound for graphrt_equivalence (max|a-b| / max|b|)")


def pytest_configure(config):
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:
        return
    settings.register_profile("graphrt-ci", derandomize=True, max_examples=50, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("graphrt-thorough", max_examples=1000, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture
def graphrt_equivalence(request):
    """``graphrt_equivalence(model, other=None, x=None, **options)``: assert_equivalent with the
    command line's devices and tolerance as defaults."""
    from .equivalence import assert_equivalent

    devices = request.config.getoption("--graphrt-devices")
    defaults = {"rtol": request.config.getoption("--graphrt-rtol"),
                "devices": devices.split(",") if devices else None}

    def check(model, other=None, x=None, **options):
        assert_equivalent(model, other, x, **{**defaults, **options})

    return check
