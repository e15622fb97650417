"""Save and load a graph with its parameters as one ``.npz`` file, without pickle.

The archive holds every parameter as a plain numeric array under its name and the graph itself as
JSON (nodes, attributes, tensor specs, parameter metadata) in the entry ``__graph__.json`` (UTF-8
bytes as a uint8 array). ``np.load(..., allow_pickle=False)`` reads it; nothing is evaluated.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np

from ..ir import Graph, Source, limits
from ..ir.errors import GraphrtError, LimitError, ParseError, WeightError
from ..ir.limits import Budget
from .archive import check_declared
from .files import bounded_memory

GRAPH_KEY = "__graph__.json"
FORMAT = "graphrt-graph/1"


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, (dict, types.MappingProxyType)):
        return {k: _plain(v) for k, v in value.items()}
    return value


def graph_to_json(graph: Graph) -> dict:
    """A JSON-ready description of ``graph`` (parameters by name and spec only)."""
    return {
        "format": FORMAT, "name": graph.name,
        "inputs": [{"name": t, "shape": list(graph.specs[t].shape), "dtype": graph.specs[t].dtype}
                   for t in graph.inputs],
        "outputs": list(graph.outputs),
        "params": [{"name": p, "shape": list(v.shape), "dtype": str(v.dtype),
                    "lr_mult": graph.param_info[p].lr_mult, "decay_mult": graph.param_info[p].decay_mult,
                    "trainable": graph.param_info[p].trainable} for p, v in graph.params.items()],
        "nodes": [{"name": n.name, "op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs),
                   "attrs": _plain(n.attrs), "absorbed": list(n.absorbed), "after": list(n.after),
                   "source": {k: v for k, v in vars(n.source).items() if v is not None}}
                  for n in graph.nodes],
    }


def graph_from_json(doc: dict, params: dict[str, np.ndarray], file: str | None = None) -> Graph:
    """Rebuild a graph from :func:`graph_to_json` output and its parameter arrays."""
    try:
        if doc.get("format") != FORMAT:
            raise ParseError(f"not a graphrt graph (format {doc.get('format')!r})", file=file)
        g = Graph(doc["name"])
        for spec in doc["inputs"]:
            g.add_input(spec["name"], tuple(spec["shape"]), spec["dtype"])
        for p in doc["params"]:
            if p["name"] not in params:
                raise WeightError(f"parameter {p['name']!r} is missing from the archive", file=file)
            value = params[p["name"]]
            if list(value.shape) != p["shape"] or str(value.dtype) != p["dtype"]:
                raise WeightError(f"parameter {p['name']!r} is {value.shape} {value.dtype}, the graph "
                                  f"says {tuple(p['shape'])} {p['dtype']}", file=file)
            g.add_param(p["name"], value, lr_mult=p["lr_mult"], decay_mult=p["decay_mult"],
                        trainable=p["trainable"])
        for n in doc["nodes"]:
            g.add_node(n["op"], n["inputs"], name=n["name"], attrs=n["attrs"], outputs=n["outputs"],
                       source=Source(**n.get("source", {})), absorbed=n.get("absorbed", ()))
            if n.get("after"):
                node = g.node(n["name"])
                g.replace_node(node.name, node.replace(after=tuple(n["after"])))
        g.set_outputs(doc["outputs"])
        return g
    except (KeyError, TypeError, ValueError) as err:
        raise ParseError(f"malformed graph description: {type(err).__name__}: {err}", file=file) from None


def save_graph(graph: Graph, path: str | Path) -> Path:
    """Write ``graph`` and its parameters to ``path`` atomically; returns the path written.

    The path named is the path written (``.npz`` is added only to a name without a suffix). The
    archive goes to a temporary file in the same folder, is flushed to disk (fsync) and then
    renamed over ``path`` (``os.replace``, atomic): a full disk, a crash or a Ctrl-C during the
    save leaves the previous file at ``path`` intact and loadable, and no temporary file behind.
    """
    target = Path(path)
    target = target if target.suffix else target.with_suffix(".npz")
    text = json.dumps(graph_to_json(graph)).encode("utf-8")
    arrays = {name: np.asarray(value) for name, value in graph.params.items()}
    if GRAPH_KEY in arrays:
        raise GraphrtError(f"a parameter may not be named {GRAPH_KEY!r}")
    folder = target.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays, **{GRAPH_KEY: np.frombuffer(text, np.uint8)})
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)
    return target


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (where the platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_members(path: str | Path, file: str) -> None:
    """Check every member's declared sizes before numpy allocates them: each ``.npy`` header's
    shape and dtype against the bytes the member holds and against the load's parameter budget
    (the graph description against ``MAX_CONFIG_BYTES``)."""
    budget = Budget()
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            check_declared(info, file)
            if info.filename == GRAPH_KEY + ".npy" and info.file_size > limits.MAX_CONFIG_BYTES:
                raise LimitError(f"the graph description declares {info.file_size:,} bytes, over "
                                 "the limit on a JSON member (MAX_CONFIG_BYTES): "
                                 f"{limits.how_to_raise('MAX_CONFIG_BYTES')}", file=file)
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(fh)
                if dtype.hasobject or dtype.kind not in "biuf":
                    raise ParseError(f"member {info.filename!r} has dtype {dtype}, not a number",
                                     file=file)
                need = math.prod(shape) * dtype.itemsize
                if need > info.file_size or any(d < 0 or d >= 2**62 for d in shape):
                    raise ParseError(f"member {info.filename!r} declares shape {shape} ({need:,} "
                                     f"bytes) but holds {info.file_size:,} bytes", file=file)
                if info.filename != GRAPH_KEY + ".npy":
                    budget.take_array("param", f"parameter {info.filename[:-4]!r}", shape, dtype,
                                      file=file)


@bounded_memory
def load_graph(path: str | Path) -> Graph:
    """Read a graph saved by :func:`save_graph` (no pickle: object arrays are refused)."""
    file = str(path)
    try:
        _check_members(path, file)
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except GraphrtError:
        raise
    except Exception as err:  # noqa: BLE001 - zipfile/numpy raise OSError, ValueError, SyntaxError,
        # tokenize.TokenError, NotImplementedError (compression), EOFError... on a corrupt archive
        raise ParseError(f"cannot read the .npz archive: {type(err).__name__}: {err}",
                         file=file) from None
    if GRAPH_KEY not in arrays:
        raise ParseError(f"the archive has no {GRAPH_KEY} entry: not saved by graphrt", file=file)
    try:
        doc = json.loads(arrays.pop(GRAPH_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError, deep nesting
        raise ParseError(f"the graph description is not valid JSON: {err}", file=file) from None
    return graph_from_json(doc, arrays, file)
