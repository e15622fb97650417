"""``cupy.ndarray`` of the stand-in: an array in a device allocation.

Host code sees its shape, dtype, strides and device pointer (``a.data.ptr``), never its bytes:
``np.asarray(a)`` raises as CuPy's does, and the values reach the host only through a copy
(``a.get()``, ``cupy.asnumpy``) on a stream. Slicing, ``reshape``, ``view`` and ``transpose`` make
views. CuPy's own operations (ufuncs, ``astype``, ``copy``, ``concatenate``, ``sum``) run on the
current stream like any other work, computed with numpy by the stream's worker: they are CuPy's
kernels, not graphrt's, so the stand-in may compute them as it likes.
"""
from __future__ import annotations

import numpy as np

from . import cupy_cuda as cuda
from .state import STATE, machine, rt


class _Flags:
    def __init__(self, a: np.ndarray):
        self.c_contiguous = bool(a.flags.c_contiguous)
        self.f_contiguous = bool(a.flags.f_contiguous)


class ndarray:
    """A device array (see the module docstring); ``memptr`` places it in existing memory."""

    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        memptr = cuda.alloc(nbytes) if memptr is None else memptr
        dev = machine().devices[memptr.device_id]
        alloc, offset = dev.find(memptr.ptr, nbytes if strides is None else 0)
        raw = np.frombuffer(alloc.buffer, np.uint8, alloc.size, alloc.host - alloc.buffer.ctypes.data)
        self._init(np.ndarray(shape, dtype, raw, offset, strides), memptr, alloc)

    def _init(self, view: np.ndarray, memptr, alloc) -> "ndarray":
        self._view, self._memptr, self._alloc = view, memptr, alloc
        return self

    @classmethod
    def _wrap(cls, view: np.ndarray, like: "ndarray") -> "ndarray":
        return cls.__new__(cls)._init(view, like._memptr, like._alloc)

    # ---- what host code may see ----
    shape = property(lambda self: self._view.shape)
    dtype = property(lambda self: self._view.dtype)
    strides = property(lambda self: self._view.strides)
    ndim = property(lambda self: self._view.ndim)
    size = property(lambda self: self._view.size)
    nbytes = property(lambda self: self._view.nbytes)
    itemsize = property(lambda self: self._view.itemsize)
    flags = property(lambda self: _Flags(self._view))
    device = property(lambda self: cuda.Device(self._alloc.device))

    @property
    def data(self):
        """The device pointer of the first element (``.ptr``)."""
        return cuda.MemoryPointer(self._memptr.mem, self._memptr.offset + self._byte_offset())

    def _byte_offset(self) -> int:
        return self._view.__array_interface__["data"][0] - self._alloc.host - \
            (self._memptr.ptr - self._alloc.start)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<stand-in device array {self.shape} {self.dtype} at {self.data.ptr:#x}>"

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
                        "to construct a NumPy array explicitly.")

    @property
    def __cuda_array_interface__(self) -> dict:
        ptr = cuda.get_current_stream().ptr
        return {"shape": self.shape, "typestr": self.dtype.str, "version": 3,
                "data": (self.data.ptr, False), "stream": 1 if ptr == 0 else ptr,
                "strides": None if self._view.flags.c_contiguous else self.strides}

    def __dlpack_device__(self):
        return (2, self._alloc.device)

    # ---- views ----
    def __getitem__(self, key) -> "ndarray":
        return self._wrap(_basic_index(self._view, key), self)

    def view(self, dtype) -> "ndarray":
        return self._wrap(self._view.view(dtype), self)

    def reshape(self, *shape) -> "ndarray":
        shape = shape[0] if len(shape) == 1 and not np.isscalar(shape[0]) else shape
        v = self._view.view()
        try:
            v.shape = shape
        except AttributeError:
            return self.copy().reshape(shape)
        return self._wrap(v, self)

    def transpose(self, *axes) -> "ndarray":
        axes = axes[0] if len(axes) == 1 and not np.isscalar(axes[0]) else (axes or None)
        return self._wrap(self._view.transpose(axes), self)

    T = property(lambda self: self.transpose())

    def ravel(self) -> "ndarray":
        return self.reshape(-1)

    # ---- CuPy's operations, on the current stream ----
    def copy(self) -> "ndarray":
        out = ndarray(self.shape, self.dtype)
        if self._view.flags.c_contiguous:
            rt().memcpyAsync(out.data.ptr, self.data.ptr, self.nbytes, rt().memcpyDeviceToDevice,
                             cuda.get_current_stream().ptr)
            return out
        _on_stream(lambda o, x: np.copyto(o, x), out, self)
        return out

    def astype(self, dtype, copy: bool = True) -> "ndarray":
        if np.dtype(dtype) == self.dtype and not copy:
            return self
        out = ndarray(self.shape, dtype)
        _on_stream(lambda o, x: np.copyto(o, x, casting="unsafe"), out, self)
        return out

    def get(self, stream=None, out=None) -> np.ndarray:
        """A host copy, made on ``stream`` (the current stream by default), waited for."""
        src = self if self._view.flags.c_contiguous else self.copy()
        host = np.empty(self.shape, self.dtype) if out is None else out
        stream = stream or cuda.get_current_stream()
        rt().memcpyAsync(host.ctypes.data, src.data.ptr, self.nbytes, rt().memcpyDeviceToHost,
                         stream.ptr)
        stream.synchronize()
        return host

    def sum(self, axis=None, dtype=None) -> "ndarray":
        shape = np.sum(np.empty(self.shape, bool), axis=axis).shape
        out = ndarray(shape, np.sum(np.zeros(1, self.dtype), dtype=dtype).dtype)
        _on_stream(lambda o, x: np.copyto(o, np.sum(x, axis=axis, dtype=dtype)), out, self)
        return out

    def __int__(self):
        return int(self.get())

    def __float__(self):
        return float(self.get())

    def __bool__(self):
        return bool(self.get())

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__" or kwargs or ufunc.nout != 1:
            return NotImplemented
        if any(isinstance(x, np.ndarray) and x.ndim for x in inputs):
            raise TypeError(f"{ufunc.__name__}: a numpy array and a device array (copy it first)")
        arrays = [x for x in inputs if isinstance(x, ndarray)]
        shape = np.broadcast_shapes(*[x.shape for x in arrays])
        dtype = ufunc(*[np.zeros(1, x.dtype) if isinstance(x, ndarray) else x for x in inputs]).dtype
        out = ndarray(shape, dtype)
        slots = [i for i, x in enumerate(inputs) if isinstance(x, ndarray)]

        def run(o, *views):
            args = list(inputs)
            for i, v in zip(slots, views):
                args[i] = v
            np.copyto(o, ufunc(*args))
        _on_stream(run, out, *arrays)
        return out

    def __array_function__(self, func, types, args, kwargs):
        if func is np.concatenate:
            return concatenate(*args, **kwargs)
        return NotImplemented

    __add__ = lambda self, o: np.add(self, o)
    __radd__ = lambda self, o: np.add(o, self)
    __sub__ = lambda self, o: np.subtract(self, o)
    __mul__ = lambda self, o: np.multiply(self, o)
    __rmul__ = lambda self, o: np.multiply(o, self)
    __truediv__ = lambda self, o: np.true_divide(self, o)


def _basic_index(view: np.ndarray, key) -> np.ndarray:
    """``view[key]`` for basic indices, as a view (an integer index never reads an element)."""
    key = key if isinstance(key, tuple) else (key,)
    for k in key:
        if not (k is None or k is Ellipsis or isinstance(k, (slice, int, np.integer))):
            raise NotImplementedError("the CUDA stand-in indexes device arrays with slices, "
                                      "integers, None and Ellipsis only")
    fixed, drop, axis = [], [], 0
    ndim_used = sum(1 for k in key if k is not None and k is not Ellipsis)
    for k in key:
        if k is Ellipsis:
            n = view.ndim - ndim_used
            fixed += [slice(None)] * n
            axis += n
        elif k is None:
            fixed.append(None)
            axis += 1
        elif isinstance(k, slice):
            fixed.append(k)
            axis += 1
        else:
            i = int(k) + (view.shape[len([f for f in fixed if f is not None])] if k < 0 else 0)
            fixed.append(slice(i, i + 1))
            drop.append(axis)
            axis += 1
    out = view[tuple(fixed)] if fixed else view[...]
    return out.reshape([n for d, n in enumerate(out.shape) if d not in drop]) if drop else out


def _on_stream(fn, *arrays) -> None:
    """``fn(*views)`` on the current stream's worker (CuPy's elementwise kernels)."""
    stream = machine().stream(cuda.get_current_stream().ptr)
    rt()._check_stream(stream)
    views = [a._view for a in arrays]
    stream.enqueue(lambda: fn(*views), "cupy")


# ---- functions ------------------------------------------------------------------------------------
def empty(shape, dtype=float) -> ndarray:
    return ndarray(shape, dtype)


def zeros(shape, dtype=float) -> ndarray:
    out = ndarray(shape, dtype)
    rt().memsetAsync(out.data.ptr, 0, out.nbytes, cuda.get_current_stream().ptr)
    return out


def asarray(a, dtype=None) -> ndarray:
    """A device array: ``a`` itself, a view of device memory with ``__cuda_array_interface__``
    (after synchronizing the producer's stream, as CuPy does unless
    ``CUPY_CUDA_ARRAY_INTERFACE_SYNC=0``), or a copy of host data on the current stream."""
    if isinstance(a, ndarray):
        return a if dtype is None else a.astype(dtype, copy=False)
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is not None:
        if STATE.cai_sync and cai.get("stream") is not None:
            rt().streamSynchronize(cai["stream"])
        out = _from_interface(cai)
        return out if dtype is None else out.astype(dtype, copy=False)
    host = np.ascontiguousarray(a, dtype=dtype)
    out = ndarray(host.shape, host.dtype)
    rt().memcpyAsync(out.data.ptr, host.ctypes.data, host.nbytes, rt().memcpyHostToDevice,
                     cuda.get_current_stream().ptr)
    return out


def _from_interface(cai: dict) -> ndarray:
    from .gpu import device_of

    ptr = cai["data"][0]
    dev = device_of(ptr)
    if dev is None:
        raise ValueError(f"__cuda_array_interface__ pointer {ptr:#x} is not device memory")
    alloc, offset = machine().devices[dev].find(ptr)
    mem = _Borrowed(alloc.start, alloc.size, dev)
    return ndarray(cai["shape"], np.dtype(cai["typestr"]), cuda.MemoryPointer(mem, offset),
                   cai.get("strides"))


class _Borrowed:
    """Memory owned elsewhere (an array adopted through an interface)."""

    def __init__(self, ptr: int, size: int, device_id: int):
        self.ptr, self.size, self.device_id = ptr, size, device_id


def asnumpy(a, stream=None) -> np.ndarray:
    return a.get(stream) if isinstance(a, ndarray) else np.asarray(a)


def from_dlpack(obj) -> ndarray:
    """DLPack's exchange: the producer is handed the current stream (1 for the legacy stream) and
    orders its work before it; what it returns stands for the capsule (a device array here)."""
    ptr = cuda.get_current_stream().ptr
    capsule = obj.__dlpack__(stream=1 if ptr == 0 else ptr)
    if not isinstance(capsule, ndarray):
        raise TypeError("the stand-in's DLPack capsules are its device arrays")
    return capsule


def concatenate(arrays, axis: int = 0) -> ndarray:
    arrays = list(arrays)
    shape = np.concatenate([np.empty(a.shape, bool) for a in arrays], axis=axis).shape
    out = ndarray(shape, np.result_type(*[a.dtype for a in arrays]))
    _on_stream(lambda o, *xs: np.concatenate(xs, axis=axis, out=o), out, *arrays)
    return out


def matmul(a: ndarray, b: ndarray) -> ndarray:
    """``a @ b`` of 2-D float32/float64 arrays through cuBLAS on the current device's shared handle
    (``cupy.cuda.device.get_cublas_handle()``), with that handle's math mode."""
    from .cublas import gemm_strided_batched, get_cublas_handle

    m, k = a.shape
    n = b.shape[1]
    a, b = a if a.flags.c_contiguous else a.copy(), b if b.flags.c_contiguous else b.copy()
    out = ndarray((m, n), a.dtype)
    scalars = np.array([1.0, 0.0], a.dtype)
    gemm_strided_batched(a.dtype)(get_cublas_handle(), 0, 0, n, m, k, scalars.ctypes.data,
                                  b.data.ptr, n, 0, a.data.ptr, k, 0,
                                  scalars.ctypes.data + a.dtype.itemsize, out.data.ptr, n, 0, 1)
    return out


def isfinite(a: ndarray) -> ndarray:
    return np.isfinite(a)
