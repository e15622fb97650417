"""GEMMs on the cuda device: :class:`Gemm` (what the conv2d, dense and matmul binders produce), its
mapping onto cuBLAS's column-major ``gemmStridedBatched`` (:func:`blas_plan`), and the step that
runs it through cuBLAS plus the ``bias_act`` epilogue kernel, or through our tiled ``gemm`` kernel
with the epilogue fused (:func:`gemm_step`; captured CUDA graphs use the kernel where CuPy refuses
cuBLAS during capture).

TF32 only when asked (``CudaDevice(tf32=True)`` or ``GRAPHRT_TF32=1``). Nothing here imports CuPy
at import time.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .. import calls
from ..calls import THREADS, Call, ceil_div, grid_1d
from .graphs import Step

GEMM_TILE = 64
INT32_MAX = 2**31 - 1


@dataclasses.dataclass
class Gemm:
    """``C[b] = act(alpha * A[b] @ B[b] + beta * C[b] + bias)`` for b < batch; each operand is an
    array (its data pointer is the first element) with (batch, row, column) strides in elements.
    The device runs it with cuBLAS (+ ``bias_act``) or the ``gemm`` kernel (:meth:`as_kernel`)."""

    dtype: np.dtype
    batch: int
    m: int
    n: int
    k: int
    a: Any
    sa: tuple
    b: Any
    sb: tuple
    c: Any
    sc: tuple
    alpha: float = 1.0
    beta: float = 0.0
    bias: Any = None
    bias_mode: int = 0
    act: int = 0  # the activation, a step of gr_unary with parameters slope and act_b
    slope: float = 0.0
    act_b: float = 0.0

    def as_kernel(self) -> Call:
        """Our ``gemm`` kernel: x walks column tiles; y (row tiles) and z (the batch) stop at
        CUDA's 65,535 and the kernel strides over the rest."""
        grid = (ceil_div(self.n, GEMM_TILE), min(ceil_div(self.m, GEMM_TILE), calls.MAX_GRID_YZ),
                min(self.batch, calls.MAX_GRID_YZ))
        return Call("gemm", self.dtype, grid, (256, 1, 1), (
            self.a, *self.sa, self.b, *self.sb, self.c, *self.sc, self.m, self.n, self.k,
            self.batch, self.alpha, self.beta, self.bias, self.bias_mode, self.act, self.slope,
            self.act_b))

    def epilogue(self) -> Call | None:
        """The bias + activation after a library GEMM (None when there is none)."""
        if not self.bias_mode and not self.act:
            return None
        total = self.batch * self.m * self.n
        return Call("bias_act", self.dtype, grid_1d(total), (THREADS, 1, 1), (
            self.c, self.batch, self.m, self.n, *self.sc, self.bias, self.bias_mode, self.act,
            self.slope, self.act_b))


@dataclasses.dataclass(frozen=True)
class BlasPlan:
    """The column-major ``gemmStridedBatched`` call computing a :class:`Gemm`: cuBLAS sees the
    row-major ``C = A @ B`` as ``C^T = B^T A^T``, so its A is our B and its B our A."""

    transa: str
    transb: str
    m: int
    n: int
    k: int
    a: Any
    lda: int
    stride_a: int
    b: Any
    ldb: int
    stride_b: int
    c: Any
    ldc: int
    stride_c: int
    batch: int


def _ld(unit: int, other: int, rows: int, cols: int) -> int | None:
    """The leading dimension of a column-major ``rows x cols`` matrix whose element (p, q) is at
    ``p * unit + q * other``, or None when it is not one."""
    if rows > 1 and unit != 1:
        return None
    if cols <= 1:
        return max(rows, 1)
    if other < max(rows, 1) or other > INT32_MAX:
        return None
    return int(other)


def blas_plan(g: Gemm) -> BlasPlan | None:
    """The cuBLAS arguments for ``g`` (None when a layout needs our kernel: no unit stride, an
    overlapping or too-large leading dimension, a batch stride that cuBLAS cannot take)."""
    m, n, k = g.m, g.n, g.k
    if min(m, n, k) < 1 or max(m, n, k, g.batch) > INT32_MAX:
        return None
    sab, sar, sac = g.sa
    sbb, sbr, sbc = g.sb
    scb, scr, scc = g.sc
    ldc = _ld(scc, scr, n, m)  # C^T: n x m
    if ldc is None or (g.batch > 1 and scb < 0):
        return None
    lda = _ld(sbc, sbr, n, k)  # B^T (n x k) as stored, or B (k x n) transposed
    transa = "N"
    if lda is None:
        lda, transa = _ld(sbr, sbc, k, n), "T"
    ldb = _ld(sac, sar, k, m)  # A^T (k x m) as stored, or A (m x k) transposed
    transb = "N"
    if ldb is None:
        ldb, transb = _ld(sar, sac, m, k), "T"
    if lda is None or ldb is None:
        return None
    batch = g.batch
    return BlasPlan(transa, transb, n, m, k, g.b, lda, sbb if batch > 1 else 0, g.a, ldb,
                    sab if batch > 1 else 0, g.c, ldc, scb if batch > 1 else 0, batch)


def gemm_step(g: Gemm, launcher, blas=None) -> Step:
    """``g`` as a step: through ``blas(g, plan)`` (a library GEMM, then the epilogue kernel) where
    given and cuBLAS takes the layout, else our ``gemm`` kernel; captured with the library in
    "blas" mode and with the kernel in "kernel" mode. ``launcher(call)`` binds a kernel call."""
    kernel = launcher(g.as_kernel())
    plan = blas_plan(g) if blas is not None else None
    if plan is None:
        return Step(kernel, what="gemm")
    epilogue = g.epilogue()
    epi = launcher(epilogue) if epilogue is not None else None
    library = blas(g, plan)

    def plain():
        library()
        if epi is not None:
            epi()

    def captured(mode):
        if mode == "blas":
            plain()
        else:
            kernel()
    return Step(plain, captured, what="gemm")


class CupyBlas:
    """The CuPy backend's GEMMs: cuBLAS unless ``gemm="kernel"`` (``self.gemm_mode``), in TF32 when
    ``self.tf32``; uses ``self.cp``, ``self.pointer``, the backend's ``_blas`` (the cuBLAS module,
    once imported) and ``_alpha_is_pointer``.

    cuBLAS runs on CuPy's handle of the current GPU, which the user's own CuPy calls share: each
    GEMM sets the pointer mode and math mode it needs and restores the handle's afterwards, so
    TF32 never leaks into the user's matmuls (nor the user's settings into ours)."""

    def capture_modes(self) -> list[str]:
        return (["blas"] if self.gemm_mode in ("auto", "blas") else []) + ["kernel"]

    def gemm_library(self):
        """The library GEMM for :func:`gemm_step` (None: always our kernel)."""
        return self._blas_call if self.gemm_mode != "kernel" else None

    def _cublas(self):
        if self._blas is None:
            from cupy_backends.cuda.libs import cublas

            self._blas = cublas
        return self._blas

    def _blas_call(self, g: Gemm, plan: BlasPlan):
        cublas = self._cublas()
        cp = self.cp
        fn = cublas.sgemmStridedBatched if g.dtype == np.float32 else cublas.dgemmStridedBatched
        scalars = np.array([g.alpha, g.beta], g.dtype)  # read by cuBLAS during the call (host mode)
        a, b, c = self.pointer(plan.a), self.pointer(plan.b), self.pointer(plan.c)
        math_mode = 3 if (self.tf32 and g.dtype == np.float32) else 0  # CUBLAS_TF32_TENSOR_OP_MATH
        ops = {"N": 0, "T": 1}
        head = (ops[plan.transa], ops[plan.transb], plan.m, plan.n, plan.k)
        tail = (a, plan.lda, plan.stride_a, b, plan.ldb, plan.stride_b)
        ctail = (c, plan.ldc, plan.stride_c, plan.batch)

        def call():
            handle = cp.cuda.device.get_cublas_handle()
            saved = cublas.getPointerMode(handle), cublas.getMathMode(handle)
            cublas.setPointerMode(handle, 0)  # host scalars
            cublas.setMathMode(handle, math_mode)
            try:
                self._gemm(fn, (handle, *head), tail, ctail, g, scalars)
            finally:
                cublas.setPointerMode(handle, saved[0])
                cublas.setMathMode(handle, saved[1])
        return call

    def _gemm(self, fn, head, tail, ctail, g: Gemm, scalars: np.ndarray) -> None:
        if self._alpha_is_pointer is not True:
            try:  # older CuPy: alpha and beta by value
                fn(*head, float(g.alpha), *tail, float(g.beta), *ctail)
                self._alpha_is_pointer = False
                return
            except TypeError:
                if self._alpha_is_pointer is False:
                    raise
                self._alpha_is_pointer = True
        fn(*head, scalars.ctypes.data, *tail, scalars.ctypes.data + g.dtype.itemsize, *ctail)
