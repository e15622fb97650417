"""CUDA graphs on the cuda device: a program's step captured once and replayed with one launch,
and the plain run it falls back to.

Each program (one per batch size and prefetch slot) runs plainly on its first run (compiling
kernels, creating the cuBLAS handle) and again, timed, on its second; the third captures the whole
step — input slot to outputs — into a CUDA graph and launches it, timed; from then on the program
replays the graph, unless the plain run was faster (``graphs="auto"``), or always
(``graphs=True``), or never (``graphs=False``). CuPy's cuBLAS wrappers refuse to run while a stream
captures (cupy#6290), so the capture tries the backend's modes in turn (:meth:`capture_modes`:
"blas", then "kernel" with our ``gemm`` kernel in cuBLAS's place). A program with host work (nodes
placed on the host, with their copies: ops the device has no kernel for) is never captured; when
every mode is refused the program keeps running plainly. :attr:`ProgramState.mode` and
:attr:`ProgramState.why` say which and why.
"""
from __future__ import annotations

from ....ir.errors import GraphrtError
from .driver import cuda_error_text


class Step:
    """One bound call, ready to run: ``plain()`` outside a capture, ``captured(mode)`` inside one
    (mode "blas" or "kernel" for GEMMs). ``capturable`` is False for host work."""

    __slots__ = ("plain", "capture", "capturable", "what")

    def __init__(self, plain, capture=None, capturable=True, what=""):
        self.plain = plain
        self.capture = capture or (lambda mode: plain())
        self.capturable = capturable
        self.what = what

    def captured(self, mode: str) -> None:
        self.capture(mode)


class Timer:
    """``with backend.timer(stream) as t: ...`` then ``t.seconds`` (GPU time between two events on a
    GPU)."""

    def __init__(self, start, stop):
        self._start, self._stop = start, stop
        self.seconds = None

    def __enter__(self):
        self._token = self._start()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.seconds = self._stop(self._token)


class ProgramState:
    """One program on the device: its steps, how often it ran, and how it runs from now on."""

    def __init__(self, program, steps: list[Step]):
        self.program = program
        self.steps = steps
        self.runs = 0
        self.graph = None
        self.use_graph = False
        self.plain_seconds = None
        self.graph_seconds = None
        self.mode = "plain"
        self.why = "not captured yet (a program runs plainly twice first)"

    def run(self, backend, compute, graphs: bool | str) -> None:
        """One step, with ``compute`` current: plain, timed plain, captured, then the choice."""
        if self.use_graph:
            backend.launch_graph(self.graph, compute)
        elif self.runs == 1 and graphs:
            with backend.timer(compute) as t:
                self.run_plain()
            self.plain_seconds = t.seconds
        elif self.runs == 2 and graphs:
            self.capture(backend, compute)
            if self.graph is None:
                self.run_plain()
            else:
                with backend.timer(compute) as t:
                    backend.launch_graph(self.graph, compute)
                self.graph_seconds = t.seconds
                self.choose(graphs)
        else:
            self.run_plain()
            if self.runs == 0 and not graphs:
                self.why = ("CUDA graphs are off (graphs=False or GRAPHRT_CUDA_GRAPHS=0)"
                            if backend.can_capture else "this backend cannot capture")
        self.runs += 1

    def run_plain(self) -> None:
        for step in self.steps:
            try:
                step.plain()
            except GraphrtError:
                raise
            except Exception as err:
                status = getattr(err, "status", None)  # CuPy's CUDA errors carry the code
                detail = f" ({cuda_error_text(status)})" if isinstance(status, int) else ""
                raise GraphrtError(f"cuda device: {step.what} failed: {type(err).__name__}: "
                                   f"{err}{detail}") from err

    def capture(self, backend, compute) -> None:
        blocked = [s.what for s in self.steps if not s.capturable]
        if blocked:
            self.why = "not captured: " + "; ".join(sorted(set(blocked)))
            return
        errors = []
        for mode in backend.capture_modes():
            try:
                self.graph = backend.capture(compute, self.steps, mode)
                self.mode = f"graph ({mode} GEMMs)"
                self.why = "captured" + (f" after {'; '.join(errors)}" if errors else "")
                return
            except Exception as err:  # refused: try the next mode, else stay plain
                errors.append(f"{mode} capture refused: {type(err).__name__}: {err}")
        self.why = "not captured: " + "; ".join(errors)

    def choose(self, graphs: bool | str) -> None:
        plain, graph = self.plain_seconds, self.graph_seconds
        times = f"plain step {plain * 1e3:.3f} ms, graph replay {graph * 1e3:.3f} ms"
        if graphs is True or graph <= plain:
            self.use_graph = True
            self.why = f"{self.why}; {times}"
        else:
            self.use_graph, self.graph = False, None
            self.mode = "plain"
            self.why = f"{self.why} but the plain step was faster: {times}"


class CupyGraphs:
    """The CuPy backend's timing, capture and replay on its compute stream (``self.cp``,
    ``self.stream``, ``self.on``)."""

    def timer(self, compute) -> Timer:
        cp, stream = self.cp, self.stream

        def stop(start):
            end = stream.record()
            end.synchronize()
            return cp.cuda.get_elapsed_time(start, end) / 1e3
        return Timer(lambda: stream.record(), stop)

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
