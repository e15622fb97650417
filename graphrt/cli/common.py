"""What every command shares: loading the model it names, random batches, input and output files,
progress bars, the report printer, and the library's wording turned into the command line's."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
import traceback
from pathlib import Path

import numpy as np

from ..ir.errors import GraphrtError, InputError

# the names builders give a graph when the model has none: a .py model file's graph is named after
# the file (or its NAME) instead, so pages, plans and reports say which model they are about
DEFAULT_NAMES = re.compile(r"^(sequential|mxnet|torch7_\w+)$")

# the library's keyword arguments, as the command line's options (applied to error messages)
WORDING = [
    (re.compile(r"input_shape=\(C, H, W\) or \{[^}]*\}"), "--input-shape C H W"),
    (re.compile(r"input_shape=\(([^)]*)\)"), lambda m: "--input-shape " + " ".join(
        d.strip() for d in m.group(1).split(",") if d.strip())),
    (re.compile(r"\(pass input_shape=\)"), "(pass --input-shape D [D ...])"),
    (re.compile(r"\binput_shape="), "--input-shape "),
    (re.compile(r"\bclasses=N\b"), "--classes N"),
    (re.compile(r"\bformat= one of"), "--format, one of"),
    (re.compile(r"\bas weights= with"), "as --weights with"),
    (re.compile(r"\bstage="), "--caffe-stage "),
    (re.compile(r"\bphase="), "--phase "),
]


def cli_wording(message: str) -> str:
    """``message`` with the library's ``input_shape=(C, H, W)`` and the like written as options."""
    for pattern, replacement in WORDING:
        message = pattern.sub(replacement, message)
    return message


def load_model(args):
    """The Graph of ``args.model`` with the loading options of the command line."""
    from .. import load
    from ..scheduler.executable import as_graph

    path = Path(args.model)
    shape = tuple(args.input_shape) if args.input_shape else None
    if path.suffix == ".py":
        return _load_python_model(path, shape, as_graph)
    return load(path, format=args.format, weights=args.weights, input_shape=shape,
                phase=args.phase, stage=tuple(args.caffe_stage or ()), classes=args.classes)


def _load_python_model(path: Path, shape, as_graph):
    if not path.exists():
        raise GraphrtError("no such file", file=str(path))
    name = f"graphrt_model_{path.stem}"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look the module up by name
        spec.loader.exec_module(module)
        if not hasattr(module, "build"):
            raise GraphrtError("a Python model file must define build()", file=str(path))
        model = module.build()
        graph = _python_graph(model, shape if shape is not None else getattr(module, "INPUT_SHAPE", None),
                              as_graph)
    except GraphrtError:
        raise
    except Exception as err:  # the user's file failed: say where, in one line
        frames = traceback.extract_tb(err.__traceback__)
        lines = [f.lineno for f in frames if Path(f.filename) == path.resolve()]
        raise GraphrtError(f"running the model file failed: {type(err).__name__}: {err}",
                           file=str(path), line=lines[-1] if lines else None) from None
    if DEFAULT_NAMES.match(graph.name):
        graph.name = getattr(module, "NAME", path.stem)
    return graph


def _python_graph(model, shape, as_graph):
    if shape is not None and not hasattr(model, "params"):
        try:
            return model.to_graph(input_shape=shape)
        except TypeError:
            pass
    return as_graph(model)


def device_of(args):
    """The device a command runs on: ``--device``, with ``--threads`` and ``--algorithms`` for the
    cpu device (the cuda device ignores both)."""
    from ..devices import get_device
    from ..devices.registry import available

    name = args.device
    if name == "auto":
        name = "cuda" if available("cuda") else "cpu"
    if name == "cpu":
        from ..devices.cpu import CpuDevice

        return CpuDevice(threads=args.threads, algorithms=args.algorithms)
    return get_device(name)


def random_batch(graph, batch: int, seed: int = 0) -> dict:
    """A seeded random batch for every input of ``graph``."""
    from ..ops.reference import random_feeds

    return random_feeds(graph, batch, seed)


def read_inputs(path: str):
    """An input batch from ``.npy`` (the only input) or ``.npz`` (arrays named like the inputs);
    never unpickled."""
    if not Path(path).exists():
        raise InputError("no such input file", file=path)
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {k: data[k] for k in data.files}
        return data
    except (OSError, ValueError) as err:
        detail = "it is not a .npy or .npz array file" if "pickle" in str(err) else str(err)
        raise InputError(f"cannot read the input batch: {detail}", file=path) from None


def progress(iterable, desc: str, total: int | None = None):
    """A tqdm bar around ``iterable`` (shown only after a second, and only on a terminal)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, unit="batch", delay=1.0, leave=False,
                file=sys.stderr, disable=None)


def out_path(path: str, allowed: tuple, what: str) -> Path:
    """``path`` checked before any work: a known extension, an existing folder."""
    out = Path(path)
    if out.suffix.lower() not in allowed:
        raise GraphrtError(f"cannot write {what} to {out.name!r}: the extension must be one of "
                           f"{', '.join(allowed)}", file=str(out))
    if not out.parent.exists():
        raise GraphrtError("the output folder does not exist", file=str(out.parent))
    return out


def emit(args, report: dict, text: str) -> None:
    """Print ``report`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(report) if getattr(args, "json", False) is True else text)
