"""``graphrt.load``: open a model file with the frontend its extension (or ``format``) names.

| format  | files                                  | weights                      |
|---------|----------------------------------------|------------------------------|
| caffe   | ``.prototxt``                          | ``.caffemodel``              |
| mxnet   | ``-symbol.json``                       | ``.params``                  |
| keras   | ``.keras`` archive, ``to_json()`` JSON | inside the archive, or       |
|         |                                        | ``.keras``/``.weights.h5``   |
| graphrt | ``.npz`` saved by ``Trainer.save``     | inside the archive           |
| onnx    | ``.onnx`` (needs the ``onnx`` package) | initializers                 |

A ``.json`` file is told apart by its content: MXNet symbols have ``nodes`` and ``heads``, Keras
configs ``class_name`` and ``config``.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Sequence

from ..ir.errors import GraphrtError, InputError, ParseError, UnsupportedError
from ..ir import Graph
from ..ir.gcpause import gc_paused
from .files import bounded_memory

FORMATS = ("caffe", "mxnet", "keras", "graphrt", "onnx")


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".prototxt", ".pbtxt")):
        return "caffe"
    if name.endswith(".keras") or name.endswith(".h5"):
        return "keras"
    if name.endswith(".json"):
        try:
            head = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ParseError(f"malformed JSON: {err.msg}", file=str(path), line=err.lineno,
                             column=err.colno) from None
        except (OSError, UnicodeDecodeError) as err:
            raise ParseError(f"cannot read JSON model file: {err}", file=str(path)) from None
        except (ValueError, RecursionError) as err:  # e.g. nesting deeper than the recursion limit
            raise ParseError(f"malformed JSON: {type(err).__name__}: {err}", file=str(path)) from None
        if isinstance(head, dict) and "nodes" in head and "heads" in head:
            return "mxnet"
        if isinstance(head, dict) and "class_name" in head:
            return "keras"
        raise ParseError("JSON file is neither an MXNet symbol (nodes, heads) nor a Keras config "
                         "(class_name, config)", file=str(path))
    if name.endswith(".npz"):
        return "graphrt"
    if name.endswith(".onnx"):
        return "onnx"
    if _is_graphrt_archive(path):  # a checkpoint saved under another suffix (model.ckpt)
        return "graphrt"
    raise UnsupportedError(f"cannot tell the format of {path.name!r} from its extension; pass "
                           f"format= one of {', '.join(FORMATS)}", file=str(path))


def _is_graphrt_archive(path: Path) -> bool:
    from .npz import GRAPH_KEY

    try:
        with zipfile.ZipFile(path) as zf:
            return GRAPH_KEY + ".npy" in zf.namelist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False


@gc_paused
@bounded_memory
def load(path: str | Path, format: str | None = None, weights: str | Path | None = None, *,
         phase: str = "TEST", stage: str | Sequence[str] = (),
         input_shape: Sequence[int] | None = None, classes: int | None = None, seed: int = 0,
         feed: str = "float32") -> Graph:
    """Load a model file as a :class:`Graph` with its parameters filled.

    ``phase``/``stage``/``classes`` apply to Caffe (``stage`` is one stage name or a sequence of
    them); ``input_shape`` (C, H, W) gives inputs whose shape the file does not state (Caffe data
    layers, MXNet symbols, symbolic ONNX dimensions) — given for a file that states a different one,
    it is an :class:`InputError`, never ignored; ``seed`` seeds the initializers used when no weights
    are given. ``feed="uint8"`` (Caffe) makes ``Data``/``ImageData`` layers take the stored uint8
    images and apply ``transform_param`` on the device (see :mod:`graphrt.data`).

    >>> g = graphrt.load("lenet.prototxt", weights="lenet_iter_10000.caffemodel")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise GraphrtError("no such model file", file=str(path))
    graph = _load(path, format or detect_format(path), weights, phase=phase,
                  stage=(stage,) if isinstance(stage, str) else tuple(stage), input_shape=input_shape,
                  classes=classes, seed=seed, feed=feed)
    return check_input_shape(graph, input_shape, path)


def check_input_shape(graph: Graph, input_shape, path: Path) -> Graph:
    """``graph`` if one of its batched inputs has ``input_shape`` (or none was given); an
    :class:`InputError` naming what the file declares otherwise."""
    if input_shape is None or isinstance(input_shape, dict):
        return graph
    given = tuple(int(d) for d in input_shape)
    declared = {t: tuple(graph.specs[t].shape[1:]) for t in graph.inputs if graph.specs[t].batched}
    if not declared or given in declared.values():
        return graph
    name, shape = next(iter(declared.items()))
    raise InputError(f"input_shape={given} was given, but the file declares input {name!r} as "
                     f"{shape} (batch excluded) and graphrt uses the file's shape: leave input_shape "
                     "out, or change the file", file=str(path))


def _load(path: Path, fmt: str, weights, *, phase, stage, input_shape, classes, seed,
          feed="float32") -> Graph:
    if fmt == "caffe":
        from .caffe.net import load_caffe

        return load_caffe(path, weights, phase=phase, stage=stage, input_shape=input_shape,
                          classes=classes, seed=seed, feed=feed)
    if fmt == "mxnet":
        from .mxnet import load_mxnet

        return load_mxnet(path, params=weights, input_shape=input_shape, seed=seed)
    if fmt == "graphrt":
        from .npz import load_graph

        return load_graph(path)
    if fmt == "keras":
        from .keras.files import load_keras

        return load_keras(path, seed=seed, weights=weights)
    if fmt == "onnx":
        from .onnx.importer import load_onnx

        return load_onnx(path, input_shape=input_shape)
    raise UnsupportedError(f"unknown format {fmt!r}; graphrt reads {', '.join(FORMATS)}", file=str(path))
