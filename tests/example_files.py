"""Helpers the tests share for the repository's own files: an example module loaded by path, and
the line numbers an error message must name."""
from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_example(name: str):
    """``examples/<name>.py`` imported as a module (the examples folder is not a package); returns
    the module and its path."""
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, path


def line_of(path: Path, text: str, occurrence: int = 1) -> int:
    """The number of the ``occurrence``-th line of ``path`` that contains ``text``."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return hits[occurrence - 1]


def this_line() -> int:
    """The line number of the caller's current line."""
    return inspect.currentframe().f_back.f_lineno
