"""The CUDA C sources of the ``cuda`` device (``kernels/*.cu`` beside this module) and what is read
from them: each kernel's parameter kinds, which say how a call's arguments are passed, and the
kernels that synchronize a block.

One module is compiled per dtype: ``typedef float T;`` (or ``double``) in front of
``kernels/prelude.cuh`` (helpers every kernel uses) and the op families' sources in the order of
:data:`SOURCES`. NVRTC compiles it through ``cupy.RawModule`` on a GPU, ``nvcc`` in the compile
test, and the host C++ compiler for the CUDA stand-in of ``tools/cuda_emulator``, with its
``emulation.h`` (host definitions of the CUDA built-ins) in front.

Nothing here imports CuPy.
"""
from __future__ import annotations

import re
from importlib import resources

import numpy as np

CTYPES = {"float32": "float", "float64": "double"}
FAMILIES = ("elementwise", "conv", "gemm", "pool", "norm", "softmax", "loss", "optim", "grad",
            "grad_spatial", "image", "solvers", "reduce", "index")


def read_source(name: str) -> str:
    """The text of ``kernels/<name>`` (packaged with graphrt)."""
    return (resources.files(__package__) / "kernels" / name).read_text(encoding="utf-8")


PRELUDE = read_source("prelude.cuh")
SOURCES = {family: read_source(f"{family}.cu") for family in FAMILIES}
(ELEMENTWISE, CONV, GEMM, POOL, NORM, SOFTMAX, LOSS, OPTIM, GRAD, GRAD_SPATIAL, IMAGE, SOLVERS,
 REDUCE, INDEX) = (SOURCES[f] for f in FAMILIES)
_ALL = "".join(SOURCES.values())


def module_source(dtype, *, head: str = "") -> str:
    """The whole CUDA module for ``dtype`` (float32 or float64), after ``head`` (a prelude of the
    caller's: the CUDA stand-in prepends its host definitions of CUDA's built-ins)."""
    ctype = CTYPES[np.dtype(dtype).name]
    return head + f"typedef {ctype} T;\n" + PRELUDE + "".join(SOURCES.values())


# ---- kernel signatures, parsed from the sources -----------------------------------------------
_KERNEL_RE = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)\s*\{', re.S)
_TYPES = {"const T*": "ptr", "T*": "ptr", "const void*": "ptr", "const double*": "ptr",
          "double*": "ptr", "const long long*": "ptr", "long long*": "ptr", "T": "T", "int": "int",
          "long long": "i64", "double": "f64", "float": "f32", "unsigned char*": "ptr"}


def _ctype(param: str) -> str:
    """The C type of a parameter declaration (``const T* x`` -> ``const T*``)."""
    return " ".join(param.split()).rsplit(" ", 1)[0].replace(" *", "*")


def parse_signatures(source: str) -> dict[str, tuple[str, ...]]:
    """``{kernel: (arg kind, ...)}`` with kinds ptr, T, int, i64, f64, f32."""
    out = {}
    for name, params in _KERNEL_RE.findall(source):
        kinds = []
        for p in params.split(","):
            ctype = _ctype(p)
            if ctype not in _TYPES:
                raise ValueError(f"kernel {name}: unsupported parameter {' '.join(p.split())!r}")
            kinds.append(_TYPES[ctype])
        out[name] = tuple(kinds)
    return out


SIGNATURES = parse_signatures(_ALL)


def kernel_params(source: str | None = None) -> dict[str, tuple[str, ...]]:
    """``{kernel: (C type of each parameter, ...)}`` (the CUDA stand-in's argument unpacking)."""
    return {name: tuple(_ctype(p) for p in params.split(","))
            for name, params in _KERNEL_RE.findall(source or _ALL)}


BARRIER_KERNELS = frozenset(name for name, body in re.findall(
    r'extern "C" __global__ void (\w+)\((.*?)\n\}', _ALL, re.S) if "__syncthreads" in body)
