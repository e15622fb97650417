"""Readers for Keras' on-disk formats: Keras 3 ``.keras`` archives and ``to_json()`` configs.

These are pure data readers: they return dicts and numpy arrays and know nothing about graphrt
graphs.  Every malformed input raises a :class:`ParseError` naming the file (and the archive
member); no zip, HDF5 or JSON exception escapes.

A ``.keras`` file (Keras 3 ``model.save``) is a zip archive holding::

    config.json        the model config: {"class_name": ..., "config": {..., "layers": [...]}}
    metadata.json      {"keras_version": ..., "date_saved": ...}   (optional here)
    model.weights.h5   HDF5 weights

Inside ``model.weights.h5`` every object with state gets a group path mirroring the Python
attribute structure, and its variables live in a ``vars`` sub-group as datasets ``0``, ``1``, ...
in the layer's variable order (Dense: kernel, bias; BatchNormalization: gamma, beta,
moving_mean, moving_variance)::

    layers/conv2d/vars            attrs {"name": "conv2d_4"}   the layer's config name
    layers/conv2d/vars/0          kernel (3, 3, 3, 32)
    layers/conv2d/vars/1          bias (32,)
    layers/functional/layers/dense/vars/0   nested models nest the same way
    vars                          the model's own (usually empty) variables

The group names (``conv2d``, ``conv2d_1``) are attribute names, not layer names; the layer name
is the ``name`` attribute of the ``vars`` group (when absent, the parent group's name is used).
Optimizer state (top-level ``optimizer`` group) is ignored.
"""
from __future__ import annotations

import io
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...ir.errors import GraphrtError, ParseError
from .. import limits
from ..isolate import read_in_child
from ..files import load_json

CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_MEMBER = "model.weights.h5"
SKIPPED_GROUPS = ("optimizer",)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError,
               NotImplementedError, KeyError)


@dataclass
class KerasArchive:
    """The decoded parts of a ``.keras`` file.

    ``weights`` maps each layer name (as in the config) to its arrays in variable order; layers
    without variables are absent.  Keys follow the order of the layers in ``config``.
    """

    config: dict
    metadata: dict | None = None
    weights: dict[str, list[np.ndarray]] = field(default_factory=dict)


def read_keras_json(path_or_text: Any, file: str | None = None) -> dict:
    """Parse a Keras ``model.to_json()`` config (path or text); it must have class_name/config."""
    doc, file = load_json(path_or_text, file)
    _check_model_config(doc, file)
    return doc


def _check_model_config(doc: Any, file: str | None) -> None:
    if not isinstance(doc, dict) or "class_name" not in doc or "config" not in doc:
        raise ParseError("not a Keras model config: expected an object with 'class_name' and "
                         "'config'", file=file)
    if not isinstance(doc["class_name"], str) or not isinstance(doc["config"], dict):
        raise ParseError("Keras config: 'class_name' must be a string and 'config' an object",
                         file=file)


def read_keras_archive(path: str | os.PathLike) -> KerasArchive:
    """Read a Keras 3 ``.keras`` zip: its config, metadata and weights."""
    h5py = _import_h5py()
    file = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            config_text = _read_member(zf, CONFIG_MEMBER, file)
            meta_text = _read_member(zf, METADATA_MEMBER, file) if METADATA_MEMBER in names \
                else None
            weights_blob = _read_member(zf, WEIGHTS_MEMBER, file) if WEIGHTS_MEMBER in names \
                else None
    except GraphrtError:
        raise
    except FileNotFoundError:
        raise ParseError("no such file", file=file) from None
    except _ZIP_ERRORS as exc:
        raise ParseError(f"not a readable .keras zip archive: {exc}", file=file) from None
    config = _member_json(config_text, file, CONFIG_MEMBER)
    _check_model_config(config, f"{file}:{CONFIG_MEMBER}")
    metadata = None if meta_text is None else _member_json(meta_text, file, METADATA_MEMBER)
    if metadata is not None and not isinstance(metadata, dict):
        raise ParseError("metadata must be a JSON object", file=f"{file}:{METADATA_MEMBER}")
    if weights_blob is None:
        raise ParseError(f"archive has no {WEIGHTS_MEMBER!r} member", file=file)
    weights = _read_weights(h5py, weights_blob, f"{file}:{WEIGHTS_MEMBER}")
    return KerasArchive(config, metadata, _order_like_config(weights, config))


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise GraphrtError("reading .keras archives needs h5py: pip install h5py") from None
    return h5py


def _read_member(zf: zipfile.ZipFile, member: str, file: str) -> bytes:
    try:
        info = zf.getinfo(member)  # declared sizes: checked before reading or inflating
        size = info.file_size
        cap = 2 * limits.MAX_PARAM_BYTES if member == WEIGHTS_MEMBER else limits.MAX_CONFIG_BYTES
        if size > cap:
            raise ParseError(f"member {member!r} declares {size:,} bytes, over the {cap:,}-byte "
                             "limit (graphrt.frontends.limits)", file=file)
        if info.compress_size > os.path.getsize(file):
            raise ParseError(f"member {member!r} declares {info.compress_size:,} compressed "
                             "bytes, more than the whole archive", file=file)
        return zf.read(member)
    except KeyError:
        raise ParseError(f"archive has no {member!r} member", file=file) from None
    except _ZIP_ERRORS as exc:
        raise ParseError(f"cannot extract {member!r}: {exc}", file=file) from None


def _member_json(blob: bytes, file: str, member: str) -> Any:
    name = f"{file}:{member}"
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(f"not UTF-8 text (byte offset {exc.start})", file=name) from None
    if not text.strip():
        raise ParseError("empty JSON member", file=name)
    return load_json(text, name)[0]


# ----------------------------------------------------------------------------- HDF5 weights

def _read_weights(h5py, blob: bytes, file: str) -> dict[str, list[np.ndarray]]:
    """The weights in ``blob``, read in a child process bounded by ``limits.HDF5_SECONDS``:
    libhdf5 can loop forever or crash on a corrupt file."""
    return read_in_child(lambda: _read_weights_here(h5py, blob, file), limits.HDF5_SECONDS,
                         "the HDF5 weights", file)


def _read_weights_here(h5py, blob: bytes, file: str) -> dict[str, list[np.ndarray]]:
    try:
        with h5py.File(io.BytesIO(blob), "r") as h5:
            found: dict[str, list[np.ndarray]] = {}
            paths: dict[str, str] = {}
            _walk(h5py, h5, found, paths, file)
            return found
    except GraphrtError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, RuntimeError...
        raise ParseError(f"corrupt HDF5 weights: {exc}", file=file) from None


def _walk(h5py, group, found: dict, paths: dict, file: str) -> None:
    for key in sorted(group.keys(), key=_natural_key):
        item = group[key]
        if group.name == "/" and key in SKIPPED_GROUPS:
            continue
        if not isinstance(item, h5py.Group):
            continue
        if key == "vars":
            _add_vars(h5py, item, found, paths, file)
        else:
            _walk(h5py, item, found, paths, file)


def _add_vars(h5py, vars_group, found: dict, paths: dict, file: str) -> None:
    arrays = [_dataset_array(h5py, vars_group[k], file)
              for k in sorted(vars_group.keys(), key=_var_key)
              if isinstance(vars_group[k], h5py.Dataset)]
    if not arrays:
        return
    name = _layer_name(vars_group)
    if name in found:
        raise ParseError(f"layer name {name!r} used by both {paths[name]} and {vars_group.name}",
                         file=file)
    found[name] = arrays
    paths[name] = vars_group.name


def _layer_name(vars_group) -> str:
    name = vars_group.attrs.get("name")
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    if isinstance(name, str) and name:
        return name
    parent = vars_group.name.rsplit("/", 2)
    return parent[-2] if len(parent) >= 2 and parent[-2] else "<root>"


def _dataset_array(h5py, ds, file: str) -> np.ndarray:
    if ds.dtype.kind not in "biuf":
        raise ParseError(f"variable {ds.name} has non-numeric dtype {ds.dtype}", file=file)
    nbytes = ds.size * ds.dtype.itemsize  # declared: checked before reading allocates it
    stored = ds.id.get_storage_size()
    if nbytes > limits.MAX_PARAM_BYTES or (ds.compression is None and stored < nbytes):
        raise ParseError(f"variable {ds.name} declares shape {ds.shape} ({nbytes:,} bytes) but "
                         f"the file stores {stored:,} bytes for it (limit "
                         f"{limits.MAX_PARAM_BYTES:,})", file=file)
    return np.asarray(ds[()])


def _var_key(key: str) -> tuple:
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def _natural_key(key: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in re.split(r"(\d+)", key) if p)


def _config_layer_names(config: Any) -> list[str]:
    """Every layer name in a (possibly nested) model config, in config order."""
    names: list[str] = []
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            inner = node.get("config")
            if "class_name" in node and isinstance(inner, dict) and isinstance(
                    inner.get("name"), str):
                names.append(inner["name"])
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return names


def _order_like_config(weights: dict, config: dict) -> dict[str, list[np.ndarray]]:
    rank = {name: i for i, name in reversed(list(enumerate(_config_layer_names(config))))}
    order = sorted(enumerate(weights), key=lambda p: (rank.get(p[1], len(rank)), p[0]))
    return {name: weights[name] for _, name in order}


__all__ = ["KerasArchive", "read_keras_archive", "read_keras_json"]
