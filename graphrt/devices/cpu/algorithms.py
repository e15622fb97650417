"""Which algorithm each convolution runs on the cpu device, chosen per layer.

Candidates (:data:`ALGORITHMS`), each a kernel with its own workspace function:

- ``im2col``: the input's windows gathered into the workspace in chunks, one BLAS GEMM per chunk;
- ``im2col_nhwc``: the same in channels-last order, with a tall GEMM (:mod:`.nhwc`): longer
  contiguous runs to gather, and a GEMM shape OpenBLAS runs faster when a layer has few channels;
- ``pointwise``: a 1x1 stride-1 unpadded convolution as a GEMM on the input itself (no copy);
- ``winograd``: Winograd F(2x2, 3x3) for 3x3 stride-1 dilation-1 layers (:mod:`.winograd`).

``algorithms`` (of ``graphrt.compile``, or the environment variable ``GRAPHRT_ALGORITHMS`` when
not given) says how to choose:

- ``"measure"`` (the default): at compile time every candidate that applies is timed on the
  executable's own arena buffers, with the executable's threads, and the fastest is kept. The
  choice is cached on disk (:func:`cache_path`: ``$GRAPHRT_CACHE_DIR`` or ``~/.cache/graphrt``,
  safe to delete), keyed by the layer's shapes and attributes, the batch, the threads, the dtype and
  the machine (CPU model, numpy and BLAS versions); a cache that cannot be read is ignored and
  rewritten, never an error.
- ``"default"``: no timing; a fixed rule (:func:`fixed`): ``pointwise`` where it applies, else
  ``im2col``. Plans and tables are then the same on every machine (the test suite runs this way).
- the name of a candidate: that algorithm wherever it applies (the fixed rule elsewhere).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ...ir import Graph, Node
from ...ir.errors import GraphrtError
from . import kernels as K
from .threads import blas_description
from .winograd import applies as winograd_applies

log = logging.getLogger(__name__)

ENV = "GRAPHRT_ALGORITHMS"
CACHE_ENV = "GRAPHRT_CACHE_DIR"
CACHE_FILE = "conv_algorithms.json"
MODES = ("measure", "default")
ROUNDS = 3  # timed runs of each candidate (interleaved); the fastest run counts
CLOCK = time.process_time  # CPU time of all the process's threads (see measure)


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """A convolution algorithm: when it applies, its kernel, and its workspace bytes."""

    name: str
    applies: Callable[[dict, int, int], bool]
    kernel: Callable
    workspace: Callable[[Node, Graph, int], int]


ALGORITHMS = {a.name: a for a in (
    Algorithm("im2col", lambda attrs, kh, kw: True, K._small_buffers(K.conv2d_im2col),
              K.im2col_workspace),
    Algorithm("im2col_nhwc", lambda attrs, kh, kw: True, K._small_buffers(K.conv2d_nhwc),
              K.nhwc_workspace),
    Algorithm("pointwise", K._is_pointwise, K._small_buffers(K.conv2d_pointwise),
              K.pointwise_workspace),
    Algorithm("winograd", winograd_applies, K._small_buffers(K.conv2d_winograd),
              K.winograd_workspace),
)}


def resolve_mode(algorithms: str | None) -> str:
    """``algorithms`` checked (None: ``$GRAPHRT_ALGORITHMS``, else ``"measure"``)."""
    mode = algorithms if algorithms is not None else os.environ.get(ENV) or "measure"
    if mode not in MODES and mode not in ALGORITHMS:
        raise GraphrtError(f"algorithms must be one of {', '.join(map(repr, MODES + tuple(ALGORITHMS)))}"
                           f", got {mode!r}" + (f" (from ${ENV})" if algorithms is None else ""))
    return mode


def candidates(node: Node, graph: Graph) -> list[str]:
    """The algorithms that can run ``node`` (a conv2d), in :data:`ALGORITHMS` order."""
    kh, kw = graph.specs[node.inputs[1]].shape[2:]
    return [a.name for a in ALGORITHMS.values() if a.applies(node.attrs, kh, kw)]


def fixed(node: Node, graph: Graph) -> str:
    """The fixed rule: ``pointwise`` where it applies, else ``im2col``."""
    return "pointwise" if "pointwise" in candidates(node, graph) else "im2col"


def initial_choice(node: Node, graph: Graph, mode: str, cached: dict, key: str) -> str | None:
    """The algorithm of ``node`` before any timing (None: it must be measured)."""
    names = candidates(node, graph)
    if mode == "default" or len(names) == 1:
        return fixed(node, graph)
    if mode in ALGORITHMS:
        return mode if mode in names else fixed(node, graph)
    found = cached.get(key)
    return found if found in names else None


# ---- keys and the cache -------------------------------------------------------------------------
def layer_key(node: Node, graph: Graph, batch: int, threads: int) -> str:
    """The layer as the cache knows it: shapes, attributes, batch, threads, dtype."""
    spec = graph.specs[node.inputs[0]]
    a = node.attrs
    parts = [f"x{spec.concrete(batch)}", f"w{graph.specs[node.inputs[1]].shape}",
             f"s{a['stride']}", f"p{a['pads']}", f"d{a['dilation']}", f"g{a['groups']}",
             f"b{len(node.inputs) == 3}", f"a{a.get('activation', 'none')}",
             f"n{batch}", f"t{threads}", str(np.dtype(spec.dtype))]
    return "|".join(parts).replace(" ", "")


def machine_key() -> str:
    """CPU model, numpy version and BLAS library: a choice measured elsewhere is not reused."""
    return f"{cpu_model()} | numpy {np.__version__} | {blas_description()}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def cache_path() -> Path:
    """``$GRAPHRT_CACHE_DIR/conv_algorithms.json`` (default ``~/.cache/graphrt``)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "graphrt")
    return Path(root) / CACHE_FILE


def read_cache() -> dict:
    """This machine's cached choices ({layer key: algorithm}); {} when the file is missing,
    unreadable or not what graphrt writes."""
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
        entries = data["machines"][machine_key()]
        return {k: v["algorithm"] for k, v in entries.items()
                if isinstance(k, str) and isinstance(v, dict) and v.get("algorithm") in ALGORITHMS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write_cache(found: dict[str, dict]) -> None:
    """Add ``found`` ({layer key: {"algorithm": name, "ms": {name: ms}}}) to the cache file,
    rewriting it whole (atomically) when it was missing or unreadable; a failure to write is
    logged and ignored."""
    path = cache_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("machines"), dict):
            raise ValueError("not a graphrt cache")
    except (OSError, ValueError):
        data = {"version": 1, "machines": {}}
    machines = data["machines"]
    entries = machines.get(machine_key())
    if not isinstance(entries, dict):
        entries = machines[machine_key()] = {}
    entries.update(found)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".conv_algorithms.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as err:
        log.warning("graphrt: cannot write the algorithm cache %s: %s", path, err)


# ---- measuring ----------------------------------------------------------------------------------
def measure(launch, kernels: dict[str, Callable]) -> tuple[str, dict[str, float]]:
    """The fastest of ``kernels`` ({name: kernel}) on ``launch``'s own views and workspace, and
    every candidate's best time in ms. Candidates are interleaved over :data:`ROUNDS` rounds after
    one untimed run each (which touches the workspace). Time is the process's CPU time
    (:data:`CLOCK`, every thread's parts counted): on a machine other jobs load, wall time also
    counts the time the threads wait for a core, and a choice measured then would be cached wrong
    for good."""
    best = {name: float("inf") for name in kernels}
    args = (launch.attrs, launch.inputs, launch.outputs, launch.workspace)
    with np.errstate(all="ignore"):
        for fn in kernels.values():
            fn(*args)
        for _ in range(ROUNDS):
            for name, fn in kernels.items():
                start = CLOCK()
                fn(*args)
                best[name] = min(best[name], CLOCK() - start)
    name = min(best, key=best.get)
    return name, {k: round(v * 1e3, 4) for k, v in best.items()}
