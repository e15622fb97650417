"""The ``cuda`` device: CuPy arrays in one device arena, graphrt's own CUDA kernels, cuBLAS GEMMs,
a compute and a copy stream with CUDA events between them, page-locked staging buffers, and each
step captured once into a CUDA graph and replayed with one launch.

Importing this module never imports CuPy: CuPy is imported when a :class:`CudaDevice` is created
(``get_device("cuda")``, or ``"auto"`` when :func:`cuda_available`). Without CuPy or a GPU,
``CudaDevice()`` raises :class:`~graphrt.errors.UnsupportedError` saying which is missing.

Memory. ``alloc_arena`` makes one device allocation (``cupy.cuda.Memory``) per executable and
returns it as a CuPy ``uint8`` array, so :func:`graphrt.memory.make_views` slices it into CuPy views
at the planned offsets exactly as it slices the cpu device's numpy arena. Parameters are uploaded
once (``upload``). Outputs are preallocated views; a step allocates nothing.

Kernels. :mod:`graphrt.devices.cuda_kernels` binds every launch of a program once into kernel calls
with all arguments resolved (pointers, strides, geometry). Convolution is im2col (a kernel of ours)
+ GEMM straight into the output view; dense and matmul are GEMMs; everything else has a kernel of
its own (see that module). GEMMs run through cuBLAS (``sgemmStridedBatched``; TF32 only when asked:
``CudaDevice(tf32=True)`` or ``GRAPHRT_TF32=1``) with a ``bias_act`` epilogue kernel, or through our
tiled ``gemm`` kernel with the epilogue fused. Every launch goes to the device's compute stream.

CUDA graphs. Each program (one per batch size and prefetch slot) runs plainly on its first run
(compiling kernels, creating the cuBLAS handle) and again, timed, on its second; the third captures
the whole step — input slot to outputs — into a CUDA graph (``Stream.begin_capture``) and launches
it, timed; from then on the program replays the graph with one launch, unless the plain run was
faster (``graphs="auto"``, the default: large GEMMs through cuBLAS can beat our captured kernel),
or always (``graphs=True``, ``GRAPHRT_CUDA_GRAPHS=1``), or never (``graphs=False``,
``GRAPHRT_CUDA_GRAPHS=0``). CuPy's cuBLAS wrappers refuse to run while a stream captures
(cupy#6290), so the capture first tries cuBLAS and, when refused, captures again with the ``gemm``
kernel in its place. When capture is refused altogether (a step has an op without a kernel here,
which runs its reference forward through CuPy, or the driver refuses), the program keeps running
plainly. :meth:`CudaDevice.run_mode` says which mode a program runs in and why.

Streams. The compute stream (:class:`CudaComputeStream`, one per device, non-blocking) runs
kernels; each ``copy_stream()`` is a worker thread that runs submitted work with its own CUDA stream
current and waits for it before the next item, so host work submitted after a copy (freeing its
staging buffer) runs only once the copy is done. Events are CUDA events recorded on those streams;
``wait_event`` makes a stream wait for one on the GPU. ``alloc_staging`` gives page-locked host
memory (``cupy.cuda.alloc_pinned_memory``) as a numpy array; ``to_device``/``to_host`` are
``cudaMemcpyAsync`` on the current graphrt stream (the copy stream inside its worker, else the
compute stream); ``to_host`` waits for its copy.

Zero copy. :meth:`CudaDevice.adopt` takes a CuPy array, anything with ``__cuda_array_interface__``
or a CUDA DLPack capsule (a PyTorch CUDA tensor) without a host round trip; the executable copies it
device-to-device into the input slot.

The emulated device. ``CudaDevice(emulate=True)`` runs the very same kernel sources compiled for the
CPU by the host C++ compiler (each CUDA thread a loop iteration, or a thread of its own in kernels
that synchronize), with numpy arrays as device memory: the binders, the launch arguments and the
kernels' index arithmetic are tested without a GPU. ``gemm="blas"`` there runs cuBLAS's column-major
calls as computed for the GPU, in numpy, so that mapping is tested too.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import numpy as np

from ..errors import GraphrtError, UnsupportedError
from ..graph import Graph, Node
from . import cuda_kernels as K
from .base import Device

INSTALL_HINT = ("pip install 'graphrt[cuda13]' (CuPy for CUDA 13) or 'graphrt[cuda12]'; "
                "or use device='cpu'")


def cuda_available() -> bool:
    """True when CuPy is installed and sees at least one GPU."""
    try:
        import cupy
    except Exception:
        return False
    try:
        return bool(cupy.is_available())
    except Exception:
        return False


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.lower() not in ("0", "false", "no", "off")


def cuda_error_text(code: int) -> str:
    """The CUDA runtime's name and description of an error code (cuda-python, else CuPy)."""
    try:
        from cuda.bindings import runtime as rt

        _, name = rt.cudaGetErrorName(rt.cudaError_t(code))
        _, text = rt.cudaGetErrorString(rt.cudaError_t(code))
        return f"{name.decode()}: {text.decode()}"
    except Exception:
        pass
    try:
        import cupy

        text = cupy.cuda.runtime.getErrorString(code)
        return text.decode() if isinstance(text, bytes) else str(text)
    except Exception:
        return f"CUDA error {code}"


def device_properties(device_id: int = 0) -> dict:
    """Name, compute capability, memory, SMs and driver/runtime versions (cuda-python, else CuPy)."""
    try:
        from cuda.bindings import runtime as rt

        err, props = rt.cudaGetDeviceProperties(device_id)
        if int(err) != 0:
            raise RuntimeError(cuda_error_text(int(err)))
        _, driver = rt.cudaDriverGetVersion()
        _, runtime = rt.cudaRuntimeGetVersion()
        name = props.name
        return {"name": name.decode(errors="replace").rstrip("\0") if isinstance(name, bytes) else str(name),
                "compute_capability": f"{props.major}.{props.minor}",
                "total_memory": int(props.totalGlobalMem), "multiprocessors": int(props.multiProcessorCount),
                "l2_cache": int(props.l2CacheSize), "driver": int(driver), "runtime": int(runtime),
                "via": "cuda-python"}
    except Exception:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(device_id)
        name = props["name"]
        return {"name": name.decode(errors="replace") if isinstance(name, bytes) else str(name),
                "compute_capability": f"{props['major']}.{props['minor']}",
                "total_memory": int(props["totalGlobalMem"]),
                "multiprocessors": int(props["multiProcessorCount"]),
                "l2_cache": int(props.get("l2CacheSize", 0)),
                "driver": int(cupy.cuda.runtime.driverGetVersion()),
                "runtime": int(cupy.cuda.runtime.runtimeGetVersion()), "via": "cupy"}


# ---- events and streams ---------------------------------------------------------------------------
class CudaEvent:
    """An event of the cuda device's streams: set on the host once recorded (a copy stream records
    from its worker thread), then a CUDA event (None on the emulated device)."""

    def __init__(self):
        self._flag = threading.Event()
        self.event = None
        self.error: BaseException | None = None

    def _set(self, event=None, error: BaseException | None = None) -> None:
        self.event, self.error = event, error
        self._flag.set()

    def query(self) -> bool:
        return self._flag.is_set() and (self.event is None or bool(self.event.done))

    def synchronize(self, timeout: float | None = None) -> bool:
        """Wait for the event; re-raise an error of the work before it. False on timeout."""
        if not self._flag.wait(timeout):
            return False
        if self.error is not None:
            raise self.error
        if self.event is not None:
            self.event.synchronize()
        return True


class CudaComputeStream:
    """The device's compute stream: work submitted runs at once in the caller's thread with the CUDA
    stream current (it enqueues kernels); closing it is a no-op (the device owns it)."""

    def __init__(self, backend):
        self.backend = backend

    def submit(self, fn, *args) -> None:
        with self.backend.on(self):
            fn(*args)

    def record_event(self) -> CudaEvent:
        event = CudaEvent()
        event._set(self.backend.record(self))
        return event

    def wait_event(self, event) -> None:
        if isinstance(event, CudaEvent):
            event._flag.wait()
            if event.error is not None:
                raise event.error
            if event.event is not None:
                self.backend.wait(self, event.event)
        else:
            event.synchronize()

    def synchronize(self) -> None:
        self.backend.sync(self)

    def close(self) -> None:
        pass


_STOP = object()


class CudaCopyStream:
    """A copy stream: an ordered worker thread with a CUDA stream of its own. Each submitted item
    runs with that stream current and is waited for before the next, so a host callback submitted
    after an upload runs once the upload is done. An error is kept and re-raised from the next
    ``synchronize()``, from events recorded after it, and from ``close()``."""

    def __init__(self, backend, name: str = "graphrt-cuda-copy"):
        self.backend = backend
        self.handle = backend.new_stream()
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.backend.bind_thread()
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            kind, fn, args = item
            if kind == "event":
                if self._error is None:
                    try:
                        fn._set(self.backend.record(self))
                    except BaseException as err:  # pragma: no cover - driver failure
                        self._error = err
                        fn._set(error=err)
                else:
                    fn._set(error=self._error)
                continue
            if self._error is not None:
                continue  # after a failure only events run (they carry the error)
            try:
                with self.backend.on(self):
                    fn(*args)
                self.backend.sync(self)
            except BaseException as err:  # handed to whoever waits next
                self._error = err

    def submit(self, fn, *args) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("the stream is closed")
        self._queue.put(("work", fn, args))

    def record_event(self) -> CudaEvent:
        event = CudaEvent()
        self._queue.put(("event", event, ()))
        return event

    def wait_event(self, event) -> None:
        def wait():
            if isinstance(event, CudaEvent):
                event._flag.wait()
                if event.error is not None:
                    raise event.error
                if event.event is not None:
                    self.backend.wait(self, event.event)
            else:
                event.synchronize()
        self._queue.put(("work", wait, ()))

    def synchronize(self) -> None:
        self.record_event().synchronize()

    def close(self) -> None:
        """Finish queued work, stop the thread, and re-raise a pending error."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        if self._error is not None:
            err, self._error = self._error, None
            raise err


# ---- prepared steps -------------------------------------------------------------------------------
class _Step:
    """One bound call, ready to run: ``plain()`` outside a capture, ``captured(mode)`` inside one
    (mode "blas" or "kernel" for GEMMs). ``capturable`` is False for reference fallbacks."""

    __slots__ = ("plain", "capture", "capturable", "what")

    def __init__(self, plain, capture=None, capturable=True, what=""):
        self.plain = plain
        self.capture = capture or (lambda mode: plain())
        self.capturable = capturable
        self.what = what

    def captured(self, mode: str) -> None:
        self.capture(mode)


class _ProgramState:
    def __init__(self, program, steps):
        self.program = program
        self.steps = steps
        self.runs = 0
        self.graph = None
        self.use_graph = False
        self.plain_seconds = None
        self.graph_seconds = None
        self.mode = "plain"
        self.why = "not captured yet (a program runs plainly twice first)"


# ---- the device -----------------------------------------------------------------------------------
class CudaDevice(Device):
    """A GPU through CuPy (see the module docstring); ``emulate=True`` runs the same kernels on the
    CPU for tests."""

    kind = "cuda"

    def __init__(self, device_id: int = 0, *, graphs: bool | str | None = None,
                 tf32: bool | None = None, emulate: bool = False, gemm: str = "auto"):
        tf32 = _env_flag("GRAPHRT_TF32", False) if tf32 is None else bool(tf32)
        if emulate:
            self.backend = _EmulatedBackend(gemm=gemm)
        else:
            self.backend = _CupyBackend(device_id, tf32=tf32, gemm=gemm)
        self.emulated = emulate
        self.tf32 = tf32
        if graphs is None:
            env = os.environ.get("GRAPHRT_CUDA_GRAPHS", "auto").strip().lower() or "auto"
            graphs = "auto" if env == "auto" else _env_flag("GRAPHRT_CUDA_GRAPHS", True)
        if graphs not in ("auto", True, False):
            raise GraphrtError(f"graphs must be 'auto', True or False, got {graphs!r}")
        self.graphs = graphs if self.backend.can_capture else False
        self._compute = CudaComputeStream(self.backend)
        self._tls = threading.local()
        self._states: dict[int, _ProgramState] = {}

    def __repr__(self) -> str:
        return f"<CudaDevice {self.backend.describe()}>"

    # ---- memory ----
    def alloc_arena(self, nbytes: int):
        return self.backend.alloc_arena(int(nbytes), self._compute)

    def upload(self, array: np.ndarray):
        return self.backend.upload(np.ascontiguousarray(array))

    def available_bytes(self) -> int:
        return self.backend.available_bytes()

    def alloc_staging(self, nbytes: int) -> np.ndarray:
        return self.backend.alloc_pinned(int(nbytes))

    # ---- streams ----
    def compute_stream(self) -> CudaComputeStream:
        return self._compute

    def copy_stream(self) -> CudaCopyStream:
        return CudaCopyStream(self.backend)

    def synchronize(self) -> None:
        self.backend.sync(self._compute)

    def _stream(self, stream):
        if stream is not None:
            return stream
        current = self.backend.current_graphrt_stream()
        return current if current is not None else self._compute

    # ---- copies ----
    def to_device(self, host, dst, stream=None) -> None:
        self.backend.to_device(host, dst, self._stream(stream))

    def to_host(self, src, dst: np.ndarray, stream=None) -> None:
        self.backend.to_host(src, dst, self._stream(stream))

    def adopt(self, value):
        """``value`` as a device array of this device without a copy when it is one (CuPy array,
        ``__cuda_array_interface__``, CUDA DLPack); None for host data."""
        return self.backend.adopt(value, self._compute)

    # ---- kernels ----
    def kernel(self, op: str):
        return _KernelFn(self, op)

    def workspace_bytes(self, node: Node, graph: Graph, batch: int) -> int:
        return K.workspace_bytes(node, graph, batch)

    def prepare(self, items) -> list[_Step]:
        return [self.backend.prepare(item) for item in items]

    def run_program(self, program) -> None:
        """Run a compiled program's step on the compute stream: plainly, then captured into a CUDA
        graph and replayed (see the module docstring)."""
        state = self._states.get(id(program))
        if state is None or state.program is not program:
            steps = []
            for launch in program.launches:
                steps += self.prepare(K.bind(launch.op, launch.attrs, launch.inputs,
                                             launch.outputs, launch.workspace))
            state = self._states[id(program)] = _ProgramState(program, steps)
        with self.backend.on(self._compute):
            if state.use_graph:
                self.backend.launch_graph(state.graph, self._compute)
            elif state.runs == 1 and self.graphs:
                with self.backend.timer(self._compute) as t:
                    self._run_plain(state)
                state.plain_seconds = t.seconds
            elif state.runs == 2 and self.graphs:
                self._capture(state)
                if state.graph is None:
                    self._run_plain(state)
                else:
                    with self.backend.timer(self._compute) as t:
                        self.backend.launch_graph(state.graph, self._compute)
                    state.graph_seconds = t.seconds
                    self._choose(state)
            else:
                self._run_plain(state)
                if state.runs == 0 and not self.graphs:
                    state.why = ("CUDA graphs are off (graphs=False or GRAPHRT_CUDA_GRAPHS=0)"
                                 if self.backend.can_capture else "this backend cannot capture")
            state.runs += 1

    def _run_plain(self, state: _ProgramState) -> None:
        for step in state.steps:
            try:
                step.plain()
            except GraphrtError:
                raise
            except Exception as err:
                status = getattr(err, "status", None)  # CuPy's CUDA errors carry the code
                detail = f" ({cuda_error_text(status)})" if isinstance(status, int) else ""
                raise GraphrtError(f"cuda device: {step.what} failed: {type(err).__name__}: "
                                   f"{err}{detail}") from err

    def _capture(self, state: _ProgramState) -> None:
        blocked = [s.what for s in state.steps if not s.capturable]
        if blocked:
            state.why = "not captured: " + "; ".join(sorted(set(blocked)))
            return
        errors = []
        for mode in self.backend.capture_modes():
            try:
                state.graph = self.backend.capture(self._compute, state.steps, mode)
                state.mode = f"graph ({mode} GEMMs)"
                state.why = "captured" + (f" after {'; '.join(errors)}" if errors else "")
                return
            except Exception as err:  # refused: try the next mode, else stay plain
                errors.append(f"{mode} capture refused: {type(err).__name__}: {err}")
        state.why = "not captured: " + "; ".join(errors)

    def _choose(self, state: _ProgramState) -> None:
        plain, graph = state.plain_seconds, state.graph_seconds
        times = f"plain step {plain * 1e3:.3f} ms, graph replay {graph * 1e3:.3f} ms"
        if self.graphs is True or graph <= plain:
            state.use_graph = True
            state.why = f"{state.why}; {times}"
        else:
            state.use_graph, state.graph = False, None
            state.mode = "plain"
            state.why = f"{state.why} but the plain step was faster: {times}"

    def run_mode(self, program) -> tuple[str, str]:
        """("graph (...)" or "plain", why) for a program that has run on this device."""
        state = self._states.get(id(program))
        if state is None or state.program is not program:
            return "plain", "has not run yet"
        return state.mode, state.why

    def describe(self) -> str:
        return self.backend.describe()


class _KernelFn:
    """``device.kernel(op)``: binds and runs at once (the naive executable, per-launch profiling);
    programs bind their launches once through :meth:`CudaDevice.run_program` instead."""

    def __init__(self, device: CudaDevice, op: str):
        self.device, self.op = device, op
        self.__name__ = f"cuda_{op}"

    def __call__(self, attrs, inputs, outputs, ws) -> None:
        steps = self.device.prepare(K.bind(self.op, attrs, inputs, outputs, ws))
        with self.device.backend.on(self.device._compute):
            for step in steps:
                step.plain()
        self.device.synchronize()  # callers read the outputs from other streams


class _Timer:
    """``with backend.timer(stream) as t: ...`` then ``t.seconds`` (GPU time between two events on a
    GPU, wall time on the emulated device)."""

    def __init__(self, start, stop):
        self._start, self._stop = start, stop
        self.seconds = None

    def __enter__(self):
        self._token = self._start()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.seconds = self._stop(self._token)


# ---- the CuPy backend -----------------------------------------------------------------------------
_MODULES: dict = {}  # (device, dtype) -> cupy.RawModule, compiled once per process
_FUNCTIONS: dict = {}


class _CupyBackend:
    can_capture = True

    def __init__(self, device_id: int, *, tf32: bool, gemm: str):
        try:
            import cupy
        except ImportError as err:
            raise UnsupportedError(f"the cuda device needs CuPy, which is not installed ({err}): "
                                   f"{INSTALL_HINT}") from None
        self.cp = cupy
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as err:
            raise UnsupportedError(f"CuPy {cupy.__version__} is installed but sees no usable GPU "
                                   f"({type(err).__name__}: {err}); use device='cpu'") from None
        if count < 1 or not cupy.is_available():
            raise UnsupportedError(f"CuPy {cupy.__version__} sees no GPU; use device='cpu'")
        if not 0 <= device_id < count:
            raise UnsupportedError(f"there is no GPU {device_id}: CuPy sees {count}")
        self.device_id = device_id
        self.dev = cupy.cuda.Device(device_id)
        self.dev.use()
        self.tf32 = tf32
        self.gemm_mode = gemm
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.modules: dict = {}
        self._tls = threading.local()
        self._blas = None
        self._alpha_is_pointer = None
        self._keep: list = []
        self.props = None

    def describe(self) -> str:
        if self.props is None:
            try:
                self.props = device_properties(self.device_id)
            except Exception as err:  # pragma: no cover - informational only
                self.props = {"name": f"GPU {self.device_id} ({err})"}
        p = self.props
        return (f"{p.get('name')} (sm {p.get('compute_capability', '?')}, "
                f"{p.get('total_memory', 0) / 2**30:.1f} GiB, CuPy {self.cp.__version__}"
                f"{', TF32' if self.tf32 else ''})")

    # ---- threads and streams ----
    def bind_thread(self) -> None:
        self.dev.use()

    def handle(self, s):
        return self.stream if isinstance(s, CudaComputeStream) else s.handle

    def new_stream(self):
        return self.cp.cuda.Stream(non_blocking=True)

    def on(self, s):
        backend, handle = self, self.handle(s)

        class _On:
            def __enter__(self_inner):
                self_inner.prev = getattr(backend._tls, "stream", None)
                backend._tls.stream = s
                handle.__enter__()

            def __exit__(self_inner, *exc):
                handle.__exit__(*exc)
                backend._tls.stream = self_inner.prev
        return _On()

    def current_graphrt_stream(self):
        return getattr(self._tls, "stream", None)

    def record(self, s):
        return self.handle(s).record()

    def wait(self, s, event) -> None:
        self.handle(s).wait_event(event)

    def sync(self, s) -> None:
        self.handle(s).synchronize()

    # ---- memory ----
    def alloc_arena(self, nbytes: int, compute):
        cp = self.cp
        mem = cp.cuda.Memory(max(nbytes, 1))
        arena = cp.ndarray((nbytes,), dtype=cp.uint8, memptr=cp.cuda.MemoryPointer(mem, 0))
        if nbytes:
            cp.cuda.runtime.memsetAsync(arena.data.ptr, 0, nbytes, self.stream.ptr)
        self.stream.synchronize()
        return arena

    def upload(self, array: np.ndarray):
        out = self.cp.empty(array.shape, array.dtype)
        if array.nbytes:
            self.cp.cuda.runtime.memcpy(out.data.ptr, array.ctypes.data, array.nbytes,
                                        self.cp.cuda.runtime.memcpyHostToDevice)
        return out

    def available_bytes(self) -> int:
        free, _ = self.cp.cuda.runtime.memGetInfo()
        pool = self.cp.get_default_memory_pool()
        return int(free + pool.free_bytes())

    def alloc_pinned(self, nbytes: int) -> np.ndarray:
        if nbytes == 0:
            return np.empty(0, np.uint8)
        mem = self.cp.cuda.alloc_pinned_memory(nbytes)
        return np.frombuffer(mem, np.uint8, nbytes)

    # ---- copies ----
    def is_device_array(self, a) -> bool:
        return isinstance(a, self.cp.ndarray)

    def adopt(self, value, compute):
        cp = self.cp
        if isinstance(value, cp.ndarray):
            return value
        dev = getattr(value, "__dlpack_device__", None)
        if dev is not None:
            try:
                kind = int(dev()[0])
            except Exception:
                kind = None
            if kind in (2, 3, 13):  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged
                with self.stream:  # the producer's work is ordered before our stream's
                    return cp.from_dlpack(value)
        if hasattr(value, "__cuda_array_interface__"):
            return cp.asarray(value)
        return None

    def to_device(self, host, dst, s) -> None:
        cp = self.cp
        stream = self.handle(s)
        if isinstance(host, cp.ndarray):
            # a device input: wait for the legacy default stream (where CuPy and PyTorch users
            # produce arrays), then copy on the GPU
            stream.wait_event(cp.cuda.Stream.null.record())
            if host.flags.c_contiguous and dst.flags.c_contiguous and host.nbytes == dst.nbytes \
                    and host.dtype == dst.dtype:
                cp.cuda.runtime.memcpyAsync(dst.data.ptr, host.data.ptr, host.nbytes,
                                            cp.cuda.runtime.memcpyDeviceToDevice, stream.ptr)
            else:
                with self.on(s):
                    self.prepare(K.copy_call(host.astype(dst.dtype, copy=False), dst)).plain()
            return
        host = np.ascontiguousarray(host)
        if not dst.flags.c_contiguous or host.nbytes != dst.nbytes:
            raise GraphrtError(f"to_device: {host.nbytes} host bytes for a device view of "
                               f"{dst.nbytes} bytes (contiguous: {dst.flags.c_contiguous})")
        if host.nbytes:
            cp.cuda.runtime.memcpyAsync(dst.data.ptr, host.ctypes.data, host.nbytes,
                                        cp.cuda.runtime.memcpyHostToDevice, stream.ptr)

    def to_host(self, src, dst: np.ndarray, s) -> None:
        cp = self.cp
        stream = self.handle(s)
        if not isinstance(src, cp.ndarray):
            np.copyto(dst, src)
            return
        if not src.flags.c_contiguous:
            with self.on(s):
                tmp = cp.empty(src.shape, src.dtype)
                self.prepare(K.copy_call(src, tmp)).plain()
            src = tmp
        if dst.flags.c_contiguous and dst.dtype == src.dtype and dst.nbytes == src.nbytes:
            if src.nbytes:
                cp.cuda.runtime.memcpyAsync(dst.ctypes.data, src.data.ptr, src.nbytes,
                                            cp.cuda.runtime.memcpyDeviceToHost, stream.ptr)
            stream.synchronize()
            return
        tmp_host = np.empty(src.shape, src.dtype)
        self.to_host(src, tmp_host, s)
        np.copyto(dst, tmp_host)

    # ---- kernels ----
    def function(self, dtype, name: str):
        key = (self.device_id, np.dtype(dtype).name, name)
        fn = _FUNCTIONS.get(key)
        if fn is None:
            module = _MODULES.get(key[:2])
            if module is None:
                module = _MODULES[key[:2]] = self.cp.RawModule(
                    code=K.module_source(dtype), options=("-std=c++17",))
            fn = _FUNCTIONS[key] = module.get_function(name)
        return fn

    def pointer(self, a) -> int:
        if a is None:
            return 0
        if isinstance(a, K.Offset):
            return self.pointer(a.array) + a.offset * a.array.dtype.itemsize
        if isinstance(a, self.cp.ndarray):
            return int(a.data.ptr)
        raise GraphrtError(f"a {type(a).__name__} is not a device array of this device")

    def args(self, call: K.Call) -> tuple:
        out = []
        for kind, v in zip(K.SIGNATURES[call.kernel], call.args):
            if kind == "ptr":
                out.append(np.uint64(self.pointer(v)))
            elif kind == "T":
                out.append(call.dtype.type(v))
            elif kind == "int":
                out.append(np.int32(v))
            elif kind == "i64":
                out.append(np.int64(v))
            elif kind == "f64":
                out.append(np.float64(v))
            else:
                out.append(np.float32(v))
        return tuple(out)

    def launcher(self, call: K.Call):
        fn = self.function(call.dtype, call.kernel)
        grid, block, args = tuple(call.grid), tuple(call.block), self.args(call)
        return lambda: fn(grid, block, args)

    def prepare(self, item) -> _Step:
        if isinstance(item, K.Call):
            return _Step(self.launcher(item), what=item.kernel)
        if isinstance(item, K.Gemm):
            return self._prepare_gemm(item)
        run = _fallback_runner(item)
        return _Step(run, capturable=False, what=f"{item.op} runs its reference forward ({item.reason})")

    # ---- GEMM ----
    def capture_modes(self) -> list[str]:
        return (["blas"] if self.gemm_mode in ("auto", "blas") else []) + ["kernel"]

    def _cublas(self):
        if self._blas is None:
            from cupy_backends.cuda.libs import cublas

            self._blas = cublas
        return self._blas

    def _prepare_gemm(self, g: K.Gemm) -> _Step:
        kernel = self.launcher(g.as_kernel())
        plan = K.blas_plan(g) if self.gemm_mode != "kernel" else None
        if plan is None:
            return _Step(kernel, lambda mode: kernel(), what="gemm")
        epilogue = g.epilogue()
        epi = self.launcher(epilogue) if epilogue is not None else None
        blas = self._blas_call(g, plan)

        def plain():
            blas()
            if epi is not None:
                epi()

        def captured(mode):
            if mode == "blas":
                plain()
            else:
                kernel()
        return _Step(plain, captured, what="gemm")

    def _blas_call(self, g: K.Gemm, plan: K.BlasPlan):
        cublas = self._cublas()
        cp = self.cp
        fn = cublas.sgemmStridedBatched if g.dtype == np.float32 else cublas.dgemmStridedBatched
        scalars = np.array([g.alpha, g.beta], g.dtype)
        self._keep.append(scalars)
        a, b, c = self.pointer(plan.a), self.pointer(plan.b), self.pointer(plan.c)
        math_mode = 3 if (self.tf32 and g.dtype == np.float32) else 0  # CUBLAS_TF32_TENSOR_OP_MATH
        ops = {"N": 0, "T": 1}

        def call():
            handle = cp.cuda.device.get_cublas_handle()
            cublas.setPointerMode(handle, 0)  # host scalars
            cublas.setMathMode(handle, math_mode)
            head = (handle, ops[plan.transa], ops[plan.transb], plan.m, plan.n, plan.k)
            tail = (a, plan.lda, plan.stride_a, b, plan.ldb, plan.stride_b)
            ctail = (c, plan.ldc, plan.stride_c, plan.batch)
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
        return call

    # ---- graphs ----
    def timer(self, compute) -> _Timer:
        cp, stream = self.cp, self.stream

        def stop(start):
            end = stream.record()
            end.synchronize()
            return cp.cuda.get_elapsed_time(start, end) / 1e3
        return _Timer(lambda: stream.record(), stop)

    def capture(self, compute, steps, mode):
        stream = self.stream
        with self.on(compute):
            stream.begin_capture()
            graph = None
            try:
                for step in steps:
                    step.captured(mode)
            except BaseException:
                try:
                    stream.end_capture()
                except Exception:
                    pass
                raise
            graph = stream.end_capture()
        try:
            graph.upload(stream)
        except Exception:  # upload is an optimization (CUDA 11.1+)
            pass
        return graph

    def launch_graph(self, graph, compute) -> None:
        graph.launch(self.stream)


def _fallback_runner(item: K.Fallback):
    def run():
        with np.errstate(all="ignore"):
            item.run()
    return run


# ---- the emulated backend -------------------------------------------------------------------------
class _EmulatedBackend:
    """The kernels compiled for the host and run thread by thread (tests without a GPU)."""

    can_capture = True  # a "graph" here is the list of steps, replayed in order

    def __init__(self, gemm: str = "auto"):
        self.gemm_mode = gemm
        self.libs: dict = {}
        self._tls = threading.local()

    def describe(self) -> str:
        return f"emulated on the CPU (GEMMs: {self.gemm_mode})"

    def bind_thread(self) -> None:
        pass

    def new_stream(self):
        return None

    def on(self, s):
        backend = self

        class _On:
            def __enter__(self_inner):
                self_inner.prev = getattr(backend._tls, "stream", None)
                backend._tls.stream = s

            def __exit__(self_inner, *exc):
                backend._tls.stream = self_inner.prev
        return _On()

    def current_graphrt_stream(self):
        return getattr(self._tls, "stream", None)

    def record(self, s):
        return None

    def wait(self, s, event) -> None:
        pass

    def sync(self, s) -> None:
        pass

    def alloc_arena(self, nbytes: int, compute):
        from .cpu import aligned_empty

        return aligned_empty(nbytes)

    def upload(self, array):
        from .cpu import aligned_empty

        out = aligned_empty(array.nbytes).view(array.dtype).reshape(array.shape)
        out[...] = array
        return out

    def available_bytes(self) -> int:
        return 1 << 40

    def alloc_pinned(self, nbytes: int):
        from .cpu import aligned_empty

        return aligned_empty(nbytes)

    def adopt(self, value, compute):
        return None

    def to_device(self, host, dst, s) -> None:
        np.copyto(dst, host)

    def to_host(self, src, dst, s) -> None:
        np.copyto(dst, src)

    # ---- kernels ----
    def lib(self, dtype):
        dtype = np.dtype(dtype)
        if dtype.name not in self.libs:
            self.libs[dtype.name] = _compile_emulator(dtype)
        return self.libs[dtype.name]

    @staticmethod
    def pointer(a) -> int:
        if a is None:
            return 0
        if isinstance(a, (int, np.integer)):  # an address already
            return int(a)
        if isinstance(a, K.Offset):
            return _EmulatedBackend.pointer(a.array) + a.offset * a.array.dtype.itemsize
        if not isinstance(a, np.ndarray):
            raise GraphrtError(f"a {type(a).__name__} is not an emulated device array")
        return int(a.__array_interface__["data"][0])

    def launcher(self, call: K.Call):
        lib = self.lib(call.dtype)
        ctype_of = {"T": np.ctypeslib.as_ctypes_type(call.dtype), "int": ctypes.c_int32,
                    "i64": ctypes.c_int64, "f64": ctypes.c_double, "f32": ctypes.c_float,
                    "ptr": ctypes.c_void_p}
        values = []
        for kind, v in zip(K.SIGNATURES[call.kernel], call.args):
            values.append(ctype_of[kind](self.pointer(v) if kind == "ptr" else v))
        argv = (ctypes.c_void_p * max(1, len(values)))(*[ctypes.addressof(v) for v in values])
        wrapper = getattr(lib, f"gr_wrap_{call.kernel}")
        gx, gy, gz = (tuple(call.grid) + (1, 1))[:3]
        bx, by, bz = (tuple(call.block) + (1, 1))[:3]
        threaded = int(call.kernel in K.BARRIER_KERNELS)
        launch = lib.gr_emu_launch

        def run(values=values, argv=argv):
            launch(wrapper, argv, gx, gy, gz, bx, by, bz, threaded)
        return run

    def prepare(self, item) -> _Step:
        if isinstance(item, K.Call):
            return _Step(self.launcher(item), what=item.kernel)
        if isinstance(item, K.Gemm):
            if self.gemm_mode == "blas":
                plan = K.blas_plan(item)
                if plan is not None:
                    epilogue = item.epilogue()
                    epi = self.launcher(epilogue) if epilogue is not None else (lambda: None)
                    blas = _numpy_blas(item, plan)
                    kernel = self.launcher(item.as_kernel())

                    def plain():
                        blas()
                        epi()
                    return _Step(plain, lambda mode: plain() if mode == "blas" else kernel(),
                                 what="gemm")
            return _Step(self.launcher(item.as_kernel()), what="gemm")
        return _Step(_fallback_runner(item), capturable=False,
                     what=f"{item.op} runs its reference forward ({item.reason})")

    def capture_modes(self) -> list[str]:
        return (["blas"] if self.gemm_mode == "blas" else []) + ["kernel"]

    def timer(self, compute) -> _Timer:
        import time

        return _Timer(time.perf_counter, lambda start: time.perf_counter() - start)

    def capture(self, compute, steps, mode):
        return (mode, [s.capture for s in steps])

    def launch_graph(self, graph, compute) -> None:
        mode, captured = graph
        for run in captured:
            run(mode)


def _numpy_blas(g: K.Gemm, plan: K.BlasPlan):
    """cuBLAS ``gemmStridedBatched`` (column-major) computed with numpy on strided views of the
    emulated device memory: C = alpha op(A) op(B) + beta C."""
    isz = g.dtype.itemsize

    def colmajor(src, rows, cols, ld, stride, batch):
        start = _EmulatedBackend.pointer(src)
        return _strided_at(start, g.dtype, (batch, rows, cols), (stride * isz, isz, ld * isz))

    def run():
        ra, ca = (plan.m, plan.k) if plan.transa == "N" else (plan.k, plan.m)
        rb, cb = (plan.k, plan.n) if plan.transb == "N" else (plan.n, plan.k)
        a = colmajor(plan.a, ra, ca, plan.lda, plan.stride_a, plan.batch)
        b = colmajor(plan.b, rb, cb, plan.ldb, plan.stride_b, plan.batch)
        c = colmajor(plan.c, plan.m, plan.n, plan.ldc, plan.stride_c, plan.batch)
        opa = a if plan.transa == "N" else a.transpose(0, 2, 1)
        opb = b if plan.transb == "N" else b.transpose(0, 2, 1)
        res = g.dtype.type(g.alpha) * np.matmul(opa, opb)
        if g.beta:
            res += g.dtype.type(g.beta) * c
        c[...] = res
    return run


def _strided_at(address: int, dtype, shape, strides):
    """A writable numpy view of memory at ``address`` (inside an array this process owns)."""
    class _Holder:
        pass
    holder = _Holder()
    holder.__array_interface__ = {"data": (address, False), "shape": tuple(shape),
                                  "strides": tuple(strides), "typestr": np.dtype(dtype).str,
                                  "version": 3}
    return np.asarray(holder)


# ---- the emulator: the kernels compiled for the host --------------------------------------------
EMULATOR_LAUNCHER = r"""
#include <thread>
#include <barrier>
#include <vector>
thread_local gr_dim3 threadIdx;
gr_dim3 blockIdx, blockDim, gridDim;
static std::barrier<>* gr_bar = nullptr;
void gr_emu_syncthreads() { if (gr_bar) gr_bar->arrive_and_wait(); }
typedef void (*gr_wrapper)(void**);
extern "C" int gr_emu_launch(gr_wrapper fn, void** args, unsigned gx, unsigned gy, unsigned gz,
                             unsigned bx, unsigned by, unsigned bz, int threaded) {
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
    for (unsigned x = 0; x < gx; ++x) {
        blockIdx = {x, y, z};
        if (!threaded) {
            for (unsigned tz = 0; tz < bz; ++tz)
            for (unsigned ty = 0; ty < by; ++ty)
            for (unsigned tx = 0; tx < bx; ++tx) {
                threadIdx = {tx, ty, tz};
                fn(args);
            }
            continue;
        }
        std::barrier<> bar(bx * by * bz);
        gr_bar = &bar;
        std::vector<std::thread> threads;
        for (unsigned tz = 0; tz < bz; ++tz)
        for (unsigned ty = 0; ty < by; ++ty)
        for (unsigned tx = 0; tx < bx; ++tx)
            threads.emplace_back([=] { threadIdx = {tx, ty, tz}; fn(args); });
        for (auto& t : threads) t.join();
        gr_bar = nullptr;
    }
    return 0;
}
"""


def emulator_source(dtype) -> str:
    """The module for ``dtype`` as host C++: kernels, a wrapper per kernel unpacking ``void**``
    arguments, and the launcher."""
    src = K.module_source(dtype, emulate=True)
    wrappers = []
    for name, params in K.kernel_params().items():
        unpack = ", ".join(f"*({ctype}*)a[{i}]" for i, ctype in enumerate(params))
        wrappers.append(f'extern "C" void gr_wrap_{name}(void** a) {{ {name}({unpack}); }}')
    return src + EMULATOR_LAUNCHER + "\n".join(wrappers) + "\n"


def host_compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


_EMU_LOCK = threading.Lock()


def _compile_emulator(dtype):
    cxx = host_compiler()
    if cxx is None:
        raise UnsupportedError("the emulated cuda device needs a host C++ compiler (g++)")
    src = emulator_source(dtype)
    key = hashlib.sha256((cxx + src).encode()).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), f"graphrt-cuda-emulator-{os.getuid()}")
    lib = os.path.join(folder, f"kernels-{np.dtype(dtype).name}-{key}.so")
    with _EMU_LOCK:
        if not os.path.exists(lib):
            os.makedirs(folder, exist_ok=True)
            cpp = lib[:-3] + ".cpp"
            with open(cpp, "w") as f:
                f.write(src)
            tmp = f"{lib}.{os.getpid()}.tmp"
            proc = subprocess.run([cxx, "-O2", "-std=c++20", "-pthread", "-shared", "-fPIC",
                                   "-w", "-o", tmp, cpp], capture_output=True, text=True)
            if proc.returncode:
                raise GraphrtError(f"compiling the emulated kernels failed:\n{proc.stderr[-4000:]}")
            os.replace(tmp, lib)
    handle = ctypes.CDLL(lib)
    handle.gr_emu_launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_uint] * 6 + \
        [ctypes.c_int]
    handle.gr_emu_launch.restype = ctypes.c_int
    for name in K.SIGNATURES:
        fn = getattr(handle, f"gr_wrap_{name}")
        fn.argtypes = [ctypes.c_void_p]
        fn.restype = None
    return _EmulatorLib(handle)


class _EmulatorLib:
    def __init__(self, handle):
        self.handle = handle
        self.gr_emu_launch = handle.gr_emu_launch
        for name in K.SIGNATURES:
            setattr(self, f"gr_wrap_{name}",
                    ctypes.cast(getattr(handle, f"gr_wrap_{name}"), ctypes.c_void_p))
