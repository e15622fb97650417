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

import os
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...ir import limits
from ...ir.errors import GraphrtError, LimitError, ParseError
from ...ir.limits import Budget
from ..archive import check_declared, open_member, read_member
from ..files import load_json
from .hdf5 import read_weights

CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_MEMBER = "model.weights.h5"
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


def read_keras_archive(path: str | os.PathLike, budget: Budget | None = None) -> KerasArchive:
    """Read a Keras 3 ``.keras`` zip: its config, metadata and weights (within ``budget``)."""
    h5py = _import_h5py()
    file = os.fspath(path)
    budget = budget or Budget()
    try:
        with open(file, "rb") as fh, zipfile.ZipFile(fh) as zf:
            names = set(zf.namelist())
            config_text = _read_json_member(zf, CONFIG_MEMBER, file, budget)
            meta_text = _read_json_member(zf, METADATA_MEMBER, file, budget) \
                if METADATA_MEMBER in names else None
            config = _member_json(config_text, file, CONFIG_MEMBER)
            _check_model_config(config, f"{file}:{CONFIG_MEMBER}")
            metadata = None if meta_text is None else _member_json(meta_text, file, METADATA_MEMBER)
            if metadata is not None and not isinstance(metadata, dict):
                raise ParseError("metadata must be a JSON object", file=f"{file}:{METADATA_MEMBER}")
            if WEIGHTS_MEMBER not in names:
                raise ParseError(f"archive has no {WEIGHTS_MEMBER!r} member", file=file)
            info = zf.getinfo(WEIGHTS_MEMBER)
            check_declared(info, file, budget if info.compress_type != zipfile.ZIP_STORED else None)
            weights_file = open_member(zf, info, file, fh)
            weights = read_weights(h5py, weights_file, f"{file}:{WEIGHTS_MEMBER}", budget)
    except GraphrtError:
        raise
    except FileNotFoundError:
        raise ParseError("no such file", file=file) from None
    except _ZIP_ERRORS as exc:
        raise ParseError(f"not a readable .keras zip archive: {exc}", file=file) from None
    return KerasArchive(config, metadata, _order_like_config(weights, config))


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise GraphrtError("reading .keras archives needs h5py: pip install h5py") from None
    return h5py


def _read_json_member(zf: zipfile.ZipFile, member: str, file: str, budget: Budget) -> bytes:
    try:
        info = zf.getinfo(member)  # declared sizes: checked before reading or inflating
        if info.file_size > limits.MAX_CONFIG_BYTES:
            raise LimitError(f"member {member!r} declares {info.file_size:,} bytes, over the "
                             f"limit on a JSON member (MAX_CONFIG_BYTES): "
                             f"{limits.how_to_raise('MAX_CONFIG_BYTES')}", file=file)
        check_declared(info, file, budget)
        return bytes(read_member(zf, info, file))
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
