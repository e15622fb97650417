"""The ``cuda`` device: CuPy arrays in one device arena, graphrt's own CUDA kernels, cuBLAS GEMMs,
a compute and a copy stream with CUDA events between them, page-locked staging buffers, and each
step captured once into a CUDA graph and replayed with one launch.

Importing this module never imports CuPy: CuPy is imported when a :class:`CudaDevice` is created
(``get_device("cuda")``, or ``"auto"`` when :func:`cuda_available`). Without CuPy or a GPU,
``CudaDevice()`` raises :class:`~graphrt.ir.errors.UnsupportedError` saying which is missing.

GPU and threads. CuPy's current GPU is per thread. The device makes its own GPU current around
every call that touches it, in whichever thread calls, and restores the caller's: a device on GPU 1
works from any thread and never changes which GPU the caller's own CuPy code uses.

Memory. ``alloc_arena`` makes one device allocation (``cupy.cuda.Memory``) per executable and
returns it as a CuPy ``uint8`` array, so :func:`graphrt.memory.make_views` slices it into CuPy views
at the planned offsets exactly as it slices the cpu device's numpy arena. Parameters are uploaded
once (``upload``, on the compute stream). Outputs are preallocated views; a step allocates nothing.

Kernels. Placement asks :meth:`CudaDevice.placement` about every node; a node it refuses (an op
without a kernel here, a dtype or rank the kernels do not take) runs on the host between explicit
copies (see :mod:`graphrt.passes.place`). :mod:`graphrt.devices.cuda.bind.registry` binds every
other launch of a program once into kernel calls with all arguments resolved (pointers, strides,
geometry); nothing falls back at bind time. Convolution is im2col (a kernel of ours) + GEMM
straight into the output view; dense and matmul are GEMMs; everything else has a kernel of its own
(see that module). GEMMs run through cuBLAS (``sgemmStridedBatched``, on CuPy's handle, whose
pointer and math modes are restored after each call; TF32 only when asked: ``CudaDevice(tf32=True)``
or ``GRAPHRT_TF32=1``) with a ``bias_act`` epilogue kernel, or through our tiled ``gemm`` kernel
with the epilogue fused. Every launch goes to the device's compute stream.

CUDA graphs. Each program (one per batch size and prefetch slot) runs plainly on its first run
(compiling kernels, creating the cuBLAS handle) and again, timed, on its second; the third captures
the whole step — input slot to outputs — into a CUDA graph (``Stream.begin_capture``) and launches
it, timed; from then on the program replays the graph with one launch, unless the plain run was
faster (``graphs="auto"``, the default: large GEMMs through cuBLAS can beat our captured kernel),
or always (``graphs=True``, ``GRAPHRT_CUDA_GRAPHS=1``), or never (``graphs=False``,
``GRAPHRT_CUDA_GRAPHS=0``). CuPy's cuBLAS wrappers refuse to run while a stream captures
(cupy#6290), so the capture first tries cuBLAS and, when refused, captures again with the ``gemm``
kernel in its place. When capture is refused altogether (a step has host work: nodes placed on the
host; or the driver refuses), the program keeps running plainly. :meth:`CudaDevice.run_mode` says
which mode a program runs in and why.

Streams. The compute stream (:class:`CudaComputeStream`, one per device, non-blocking) runs
kernels; each ``copy_stream()`` is a worker thread that runs submitted work with its own CUDA stream
current and waits for it before the next item, so host work submitted after a copy (freeing its
staging buffer) runs only once the copy is done. Events are CUDA events recorded on those streams;
``wait_event`` makes a stream wait for one on the GPU. ``alloc_staging`` gives page-locked host
memory (``cupy.cuda.alloc_pinned_memory``) as a numpy array; ``to_device``/``to_host`` are
``cudaMemcpyAsync`` on the current graphrt stream (the copy stream inside its worker, else the
compute stream); ``to_host`` waits for its copy. The caller's own CuPy stream is ordered with the
device's on the GPU, never by blocking: each step waits for what the caller queued before it
(reads of the last step's device outputs), and device outputs are handed over with the caller's
stream waiting for the step (:meth:`CudaDevice.hand_over`).

Zero copy. :meth:`CudaDevice.adopt` takes a CuPy array, anything with ``__cuda_array_interface__``
or a CUDA DLPack capsule (a PyTorch CUDA tensor) without a host round trip, ordered after the stream
that produced it (the interface's ``stream``, DLPack's stream exchange, or the caller's current
CuPy stream); the executable copies it device-to-device into the input slot.

Without a GPU. The tests replace CuPy itself (``sys.modules["cupy"]``) with the CUDA stand-in of
``tools/cuda_emulator`` (not shipped): simulated GPUs whose streams run asynchronously and lazily,
with events, CUDA's copy rules and capture, and whose kernels are these very ``kernels/*.cu``
compiled for the host by g++. The code that runs there is this code, CuPy backend included.

Where things are. This module: :class:`CudaDevice` and :func:`cuda_available`. The CuPy backend is
``runtime/cupy_backend.py``, put together from ``runtime/streams.py`` (streams and events),
``runtime/memory.py`` (arena, staging, uploads, copies), ``runtime/launch.py`` (kernel launches),
``runtime/gemm.py`` (cuBLAS and our GEMM) and ``runtime/graphs.py`` (capture, replay, the plain
fallback). The kernels are ``kernels/*.cu`` (read by ``sources.py``; ``calls.py`` describes one
launch), bound to a program's launches by ``bind/``.
"""
from __future__ import annotations

import collections
import os
import threading

import numpy as np

from ...ir import Graph, Node
from ...ir.errors import GraphrtError, UnsupportedError
from ...ops.collective import COMMUNICATORS, CollectiveError
from ..base import Device
from .bind import registry as K
from .calls import Unsupported
from .runtime.cupy_backend import CupyBackend
from .runtime.graphs import ProgramState, Step
from .runtime.streams import CudaComputeStream, CudaCopyStream


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


class CudaDevice(Device):
    """A GPU through CuPy (see the module docstring).

    ``graphs``: "auto" (capture, keep the faster of graph and plain), True or False (default from
    ``GRAPHRT_CUDA_GRAPHS``); ``tf32``: TF32 cuBLAS GEMMs (default from ``GRAPHRT_TF32``);
    ``gemm``: "auto" or "blas" (cuBLAS outside captures) or "kernel" (always our GEMM kernel);
    ``backend``: the object that talks to the GPU (default: CuPy's, :class:`CupyBackend`, which the
    tests run over the CUDA stand-in of ``tools/cuda_emulator`` in CuPy's place)."""

    kind = "cuda"

    def __init__(self, device_id: int = 0, *, graphs: bool | str | None = None,
                 tf32: bool | None = None, gemm: str = "auto", backend=None):
        tf32 = _env_flag("GRAPHRT_TF32", False) if tf32 is None else bool(tf32)
        self.backend = backend if backend is not None else CupyBackend(device_id, tf32=tf32, gemm=gemm)
        self.tf32 = tf32
        if graphs is None:
            env = os.environ.get("GRAPHRT_CUDA_GRAPHS", "auto").strip().lower() or "auto"
            graphs = "auto" if env == "auto" else _env_flag("GRAPHRT_CUDA_GRAPHS", True)
        if graphs not in ("auto", True, False):
            raise GraphrtError(f"graphs must be 'auto', True or False, got {graphs!r}")
        self.graphs = graphs if self.backend.can_capture else False
        self._compute = CudaComputeStream(self.backend)
        self._tls = threading.local()
        self._states: dict[int, ProgramState] = {}

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

    def hand_over(self) -> None:
        """The caller's current CuPy stream waits on the GPU for the compute stream's work so far
        (device outputs are then ready for whatever the caller queues next), without blocking."""
        self.backend.hand_over(self._compute)

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

    def count_finite(self, array) -> int:
        """Finite elements of a device array, counted on a host copy (the numerics guard)."""
        if isinstance(array, np.ndarray):
            return int(np.isfinite(array).sum())
        host = np.empty(array.shape, array.dtype)
        self.to_host(array, host)
        return int(np.isfinite(host).sum())

    # ---- kernels ----
    def placement(self, node: Node, graph: Graph) -> str | None:
        """Why this device cannot run ``node`` (None: it can): an op without a kernel here, or a
        dtype or rank the kernels do not take. Placement runs such nodes on the host."""
        return K.unsupported(node, graph)

    def kernel(self, op: str):
        return _KernelFn(self, op)

    def workspace_bytes(self, node: Node, graph: Graph, batch: int) -> int:
        return K.workspace_bytes(node, graph, batch)

    def prepare(self, items) -> list[Step]:
        return [self.backend.prepare(item) for item in items]

    def bind(self, node: str, op: str, attrs, inputs, outputs, workspace) -> list[Step]:
        """The steps of one launch; an :class:`~graphrt.ir.errors.UnsupportedError` naming the node
        where the kernels cannot take its arrays (nothing falls back behind the caller's back)."""
        try:
            return self.prepare(K.bind(op, attrs, inputs, outputs, workspace))
        except Unsupported as err:
            raise UnsupportedError(f"the cuda device cannot run this {op}: {err} (compile for "
                                   "device='cpu', or report the model: placement should have "
                                   "kept the node on the host)", node=node, op=op) from None

    def run_program(self, program) -> None:
        """Run a compiled program's step on the compute stream: plainly, then captured into a CUDA
        graph and replayed (see :mod:`graphrt.devices.cuda.runtime.graphs`). Host launches (nodes
        placed on the host and their copies) run in order between the kernels; a program with
        any is never captured. An ``all_reduce`` bound here is a group of one: a communicator
        registered for its group since is a :class:`~graphrt.ops.collective.CollectiveError`."""
        state = self._states.get(id(program))
        if state is None or state.program is not program:
            steps = []
            for launch in program.launches:
                if launch.host:
                    steps.append(_host_step(launch))
                    continue
                steps += self.bind(launch.node, launch.op, launch.attrs, launch.inputs,
                                   launch.outputs, launch.workspace)
            state = self._states[id(program)] = ProgramState(program, steps)
            state.groups = {launch.attrs["group"] for launch in program.launches
                            if launch.op == "all_reduce" and not launch.host}
        for group in state.groups & COMMUNICATORS.keys():
            raise CollectiveError(f"group {group!r} got a communicator after this executable's "
                                  "first step: its all_reduce nodes run here as a group of one; "
                                  "compile again to reduce over the group")
        self.backend.after_caller(self._compute)  # the caller's reads of the last step's outputs
        with self.backend.on(self._compute):
            state.run(self.backend, self._compute, self.graphs)

    def run_mode(self, program) -> tuple[str, str]:
        """("graph (...)" or "plain", why) for a program that has run on this device."""
        state = self._states.get(id(program))
        if state is None or state.program is not program:
            return "plain", "has not run yet"
        return state.mode, state.why

    def describe(self) -> str:
        return self.backend.describe()


def _host_step(launch) -> Step:
    def run():
        launch.fn(launch.attrs, launch.inputs, launch.outputs, launch.workspace)
    return Step(run, capturable=False, what=f"{launch.node} ({launch.op}) runs on the host")


class _KernelFn:
    """``device.kernel(op)``: runs one launch at once (the numerics guard, per-launch profiling,
    the naive executable), bound on its first call with those arrays and kept in a small cache
    (the last :attr:`CACHE` argument sets), so calling it again and again binds nothing new;
    programs bind their launches once through :meth:`CudaDevice.run_program` instead."""

    CACHE = 16

    def __init__(self, device: CudaDevice, op: str):
        self.device, self.op = device, op
        self.__name__ = f"cuda_{op}"
        self.bound: collections.OrderedDict = collections.OrderedDict()

    def steps(self, attrs, inputs, outputs, ws) -> list[Step]:
        key = (id(attrs), tuple(map(id, inputs)), tuple(map(id, outputs)), id(ws))
        entry = self.bound.get(key)
        if entry is None:
            steps = self.device.bind(None, self.op, attrs, inputs, outputs, ws)
            # the entry holds the arguments, so their ids cannot be reused while it is cached
            entry = self.bound[key] = (steps, (attrs, list(inputs), list(outputs), ws))
            while len(self.bound) > self.CACHE:
                self.bound.popitem(last=False)
        else:
            self.bound.move_to_end(key)
        return entry[0]

    def __call__(self, attrs, inputs, outputs, ws) -> None:
        steps = self.steps(attrs, inputs, outputs, ws)
        self.device.backend.after_caller(self.device._compute)
        with self.device.backend.on(self.device._compute):
            for step in steps:
                step.plain()
        self.device.synchronize()  # callers read the outputs from other streams
