"""What the cuda device's binders produce, and the layout arithmetic they share.

A binder turns one launch (``op, attrs, inputs, outputs, workspace``) into :class:`Call` objects,
kernel launches with every argument resolved (arrays for pointers, Python numbers otherwise), and
:class:`~graphrt.devices.cuda.runtime.gemm.Gemm` objects; where it cannot express the arrays it raises
:class:`Unsupported` (placement keeps such nodes off the device; see
:func:`graphrt.devices.cuda.bind.registry.unsupported`). Every array
argument is a pointer plus strides in elements (:func:`estrides`), so any view of the arena is read
and written in place; :func:`collapse` and :func:`pad6` bring a view to the kernels' rank-6 form.

Nothing here imports CuPy.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .sources import CTYPES, SIGNATURES

MAX_RANK = 6
THREADS = 256
MAX_BLOCKS = 1 << 16
MAX_GRID_YZ = 65535  # CUDA's limit on a grid's y and z dimensions (x goes to 2^31 - 1)


@dataclasses.dataclass
class Call:
    """One kernel launch with its arguments (arrays for pointers, Python numbers otherwise)."""

    kernel: str
    dtype: np.dtype
    grid: tuple
    block: tuple
    args: tuple

    def __post_init__(self):
        want = SIGNATURES[self.kernel]
        if len(want) != len(self.args):
            raise TypeError(f"{self.kernel} takes {len(want)} arguments, got {len(self.args)}")


@dataclasses.dataclass
class Offset:
    """An array argument at an element offset from another array's first element."""

    array: Any
    offset: int


def at_offset(a, offset: int):
    """``a``'s memory from ``offset`` elements after its first element (a kernel argument)."""
    return a if offset == 0 else Offset(a, offset)


class Unsupported(Exception):
    """A binder cannot express this launch with the kernels."""


def ceil_div(a: int, b: int) -> int:
    return -(-int(a) // b)


def grid_1d(total: int, threads: int = THREADS) -> tuple:
    """The grid of a grid-stride loop over ``total`` elements."""
    return (max(1, min(ceil_div(total, threads), MAX_BLOCKS)), 1, 1)


# ---- layouts -------------------------------------------------------------------------------------
def estrides(a) -> tuple:
    """Strides of ``a`` in elements."""
    size = a.dtype.itemsize
    for s in a.strides:
        if s % size:
            raise Unsupported("a stride that is not a whole number of elements")
    return tuple(s // size for s in a.strides)


def collapse(shape, *strides) -> tuple[tuple, list[tuple]]:
    """Merge adjacent axes that every operand walks contiguously and drop unit axes: the same
    elements in the same C order, with as few axes as possible."""
    dims = [(n, [s[d] for s in strides]) for d, n in enumerate(shape) if n != 1]
    out: list = []
    for n, ss in dims:
        if out and all(ps == s * n for ps, s in zip(out[-1][1], ss)):
            out[-1] = (out[-1][0] * n, ss)
        else:
            out.append((n, ss))
    if not out:
        out = [(1, [0] * len(strides))]
    return tuple(n for n, _ in out), [tuple(ss[i] for _, ss in out) for i in range(len(strides))]


def pad6(shape, strides) -> tuple[tuple, tuple]:
    """``shape`` and ``strides`` with leading unit axes up to the kernels' rank 6."""
    if len(shape) > MAX_RANK:
        raise Unsupported(f"rank {len(shape)} above {MAX_RANK}")
    k = MAX_RANK - len(shape)
    return (1,) * k + tuple(int(n) for n in shape), (0,) * k + tuple(int(s) for s in strides)


def num_elements(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def check_dtype(*arrays) -> np.dtype:
    """The one dtype of ``arrays`` (float32 or float64), else :class:`Unsupported`."""
    dtype = np.dtype(arrays[0].dtype)
    if dtype.name not in CTYPES:
        raise Unsupported(f"dtype {dtype}")
    for a in arrays[1:]:
        if np.dtype(a.dtype) != dtype:
            raise Unsupported(f"mixed dtypes {dtype} and {a.dtype}")
    return dtype


def copy_call(x, y) -> Call:
    """``y[...] = x`` in C order (shapes may differ, sizes not)."""
    return view_copy_call(x, x.shape, estrides(x), y)


def view_copy_call(x, shape, strides, y) -> Call:
    """``y[...] = `` the view of ``x``'s memory with ``shape`` and ``strides`` (elements; 0 repeats
    an element: a broadcast or a tiling), in C order."""
    dtype = check_dtype(x, y)
    total = num_elements(y.shape)
    if num_elements(shape) != total:
        raise Unsupported("copy of different sizes")
    xn, (xs,) = collapse(shape, strides)
    yn, (ys,) = collapse(y.shape, estrides(y))
    xn, xs = pad6(xn, xs)
    yn, ys = pad6(yn, ys)
    return Call("copy_nd", dtype, grid_1d(total), (THREADS, 1, 1),
                (x, y, total, *xn, *xs, *yn, *ys))
