"""Keras weights in HDF5 (``model.weights.h5``), validated and read in this process.

An HDF5 file can name other files: a dataset with *external storage* (its bytes in any path, say
``/proc/self/environ``), an *external link* or a *virtual dataset* (a view of datasets in other
files), and a filter that libhdf5 would load as a plugin. A model file may read only itself, so
each of these is refused before libhdf5 follows it: links are inspected without being followed,
and each dataset's creation properties (layout, external files, filters) before it is read.

Sizes are checked before reading: every dataset's bytes (in the dtype read) are taken from the
load's :class:`~graphrt.ir.limits.Budget` as parameters, and a dataset must store all of its bytes
(contiguous) or all of its chunks (chunked, possibly compressed): a declared shape with nothing
written would otherwise be filled with fill values of any size. Every object is visited once (an
object reached twice, through hard links making a cycle or a DAG, is refused: the walk stays linear)
and the walk stops after ``graphrt.limits.HDF5_SECONDS``. Reading happens in-process: no child
process is forked (a fork copies the whole process and is unsafe with BLAS, loader or CUDA threads).
"""
from __future__ import annotations

import math
import re
import time

import numpy as np

from ...ir import limits
from ...ir.errors import GraphrtError, ParseError
from ...ir.limits import Budget

SKIPPED_GROUPS = ("optimizer",)
ALLOWED_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32"}  # built into libhdf5
MAX_ATTRIBUTE_BYTES = 1 << 16

Weights = dict[str, list[np.ndarray]]


def read_weights(h5py, fileobj, file: str, budget: Budget | None = None) -> Weights:
    """Layer name -> arrays of every ``vars`` group of the HDF5 file ``fileobj`` (see above)."""
    try:
        with h5py.File(fileobj, "r") as h5:
            return _Walk(h5py, file, budget or Budget()).run(h5)
    except GraphrtError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, RuntimeError...
        raise ParseError(f"corrupt HDF5 weights: {exc}", file=file) from None


class _Walk:
    def __init__(self, h5py, file: str, budget: Budget):
        self.h5py, self.file, self.budget = h5py, file, budget
        self.found: Weights = {}
        self.paths: dict[str, str] = {}
        self.seen: set = set()
        self.deadline = time.monotonic() + limits.HDF5_SECONDS

    def run(self, h5) -> Weights:
        self.group(h5)
        return self.found

    def refuse(self, message: str) -> ParseError:
        return ParseError(message, file=self.file)

    def child(self, group, key: str):
        """``group[key]`` after checking the link: only hard links inside this file, each object
        reached once."""
        if time.monotonic() > self.deadline:
            raise self.refuse(f"walking the HDF5 file took more than {limits.HDF5_SECONDS:g} s "
                              f"(graphrt.limits.HDF5_SECONDS)")
        link = group.get(key, getlink=True)
        if not isinstance(link, self.h5py.HardLink):
            target = getattr(link, "filename", None) or getattr(link, "path", "")
            raise self.refuse(f"{group.name}/{key} is a {type(link).__name__} to {target!r}: a "
                              "model file may read only itself, so links are refused")
        item = group[key]
        if item.id in self.seen:
            raise self.refuse(f"{item.name} is reached twice (hard links forming a cycle or "
                              "a DAG)")
        self.seen.add(item.id)
        return item

    def group(self, group) -> None:
        for key in sorted(group.keys(), key=_natural_key):
            if group.name == "/" and key in SKIPPED_GROUPS:
                continue
            item = self.child(group, key)
            if not isinstance(item, self.h5py.Group):
                continue
            if key == "vars":
                self.add_vars(item)
            else:
                self.group(item)

    def add_vars(self, vars_group) -> None:
        keys = sorted(vars_group.keys(), key=_var_key)
        items = [self.child(vars_group, k) for k in keys]
        arrays = [self.dataset(d) for d in items if isinstance(d, self.h5py.Dataset)]
        if not arrays:
            return
        name = self.layer_name(vars_group)
        if name in self.found:
            raise self.refuse(f"layer name {name!r} used by both {self.paths[name]} and "
                              f"{vars_group.name}")
        self.found[name] = arrays
        self.paths[name] = vars_group.name

    def layer_name(self, vars_group) -> str:
        if "name" in vars_group.attrs:
            attr = vars_group.attrs.get_id("name")
            size = attr.shape and math.prod(attr.shape) or 1
            if size * attr.dtype.itemsize > MAX_ATTRIBUTE_BYTES:
                raise self.refuse(f"attribute 'name' of {vars_group.name} declares "
                                  f"{size * attr.dtype.itemsize:,} bytes")
            name = vars_group.attrs.get("name")
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            if isinstance(name, str) and name:
                return name
        parent = vars_group.name.rsplit("/", 2)
        return parent[-2] if len(parent) >= 2 and parent[-2] else "<root>"

    def dataset(self, ds) -> np.ndarray:
        if ds.dtype.kind not in "biuf":
            raise self.refuse(f"variable {ds.name} has non-numeric dtype {ds.dtype}")
        self.check_storage(ds)
        self.budget.take_array("param", f"variable {ds.name}", ds.shape, ds.dtype, file=self.file)
        return np.asarray(ds[()])

    def check_storage(self, ds) -> None:
        """Refuse external files, virtual layouts, plugin filters and declared bytes not stored."""
        h5d = self.h5py.h5d
        dcpl = ds.id.get_create_plist()
        if dcpl.get_external_count():
            names = [dcpl.get_external(i)[0] for i in range(dcpl.get_external_count())]
            raise self.refuse(f"variable {ds.name} keeps its bytes in external files {names}: a "
                              "model file may read only itself")
        layout = dcpl.get_layout()
        if layout == h5d.VIRTUAL:
            raise self.refuse(f"variable {ds.name} is a virtual dataset (a view of other files): "
                              "a model file may read only itself")
        filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        unknown = [f for f in filters if f not in ALLOWED_FILTERS]
        if unknown:
            raise self.refuse(f"variable {ds.name} uses HDF5 filters {unknown}, which libhdf5 would "
                              f"load as plugins; graphrt reads {sorted(ALLOWED_FILTERS.values())}")
        nbytes = limits.nbytes_of(ds.shape or (), ds.dtype)
        if layout == h5d.CHUNKED:
            chunks = math.prod(-(-d // c) for d, c in zip(ds.shape, ds.chunks)) if nbytes else 0
            stored = ds.id.get_num_chunks()
            complete, what = stored >= chunks, f"{stored:,} of its {chunks:,} chunks"
        else:
            stored = ds.id.get_storage_size()
            complete, what = stored >= nbytes, f"{stored:,} bytes"
        if not complete:
            raise self.refuse(f"variable {ds.name} declares shape {ds.shape} ({nbytes:,} bytes) "
                              f"but the file stores {what} for it")


def _var_key(key: str) -> tuple:
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def _natural_key(key: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in re.split(r"(\d+)", key) if p)


__all__ = ["read_weights", "SKIPPED_GROUPS"]
