"""Fuzzing every model-file parser with mutations of real files.

The contract checked: every input either loads or raises a :class:`~graphrt.ir.errors.GraphrtError`
subclass, within a time bound and a memory bound, both *beyond what graphrt's limits admitted*: a
mutated file may legitimately declare a model of hundreds of megabytes, which the limits users get
(:mod:`graphrt.limits`, 4 GiB of parameters) allow, so a case may take 256 MiB of traced peak
(tracemalloc) plus the bytes graphrt's budgets admitted during it
(:func:`graphrt.limits.taken_bytes`), and 2 s of the process's CPU time plus 1 s per 64 MiB
admitted. CPU time (not wall time) so that other work on a shared machine does not fail a case; a
hard stop (``ITIMER_PROF`` at 15 times the base bound, SIGALRM at three times that in wall-clock
time) catches a case that hangs. Anything else is a *failure*: another exception type
(``IndexError``, ``MemoryError``, ``RecursionError``...), a timeout, or a peak over the bound.

A **target** is one parser: the real files of ``../shared`` it starts from (its *seeds*, each with
the :func:`graphrt.load` options that load it) and the mutations that suit its format
(:mod:`tools.fuzz.mutators`, :mod:`tools.fuzz.binary`). A **case** is one seed, one to three
mutations and the load of the mutated bytes written to a file with the seed's extension::

    report = fuzz_random(TARGETS["caffemodel"], cases=200, seed=0)   # seeded, index-addressable
    report = fuzz_hypothesis(TARGETS["prototxt"], cases=200, seed=0) # hypothesis draws every choice
    for failure in report.failures:
        print(failure.description, failure.error)

By default the cases run under the limits users get. ``Limits(lowered=True)`` (the CI slice, and
``bench/fuzz.py --lowered-limits``) lowers graphrt's own limits instead: parameters 64 MiB, folded
constants and inflated bytes 64 MiB, an archive's JSON member 16 MiB, the HDF5 walk 1 s. The code
paths are the same, only the numbers are smaller, and the cases are faster.

The non-finite policy: NaN and infinite weights *load* in every
format (the numerics guard reports non-finite outputs); only sizes and structure are refused.
"""
from __future__ import annotations

import contextlib
import logging
import random
import shutil
import signal
import tempfile
import time
import tracemalloc
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from tools.fuzz import binary as B
from tools.fuzz import mutators as M
from graphrt.ir.errors import GraphrtError

SHARED = Path(__file__).resolve().parents[3] / "shared"


class CaseTimeout(BaseException):
    """Raised by the SIGALRM/SIGPROF handler; a BaseException so no ``except Exception`` in the
    code under test swallows it."""


@dataclass(frozen=True)
class Limits:
    """Per-case bounds, and graphrt's own limits while fuzzing."""

    seconds: float = 2.0      # CPU seconds per case, plus 1 s per ``bytes_per_second`` admitted
    wall_factor: float = 3.0  # the hard stop: SIGALRM at wall_factor * hard_factor * seconds
    hard_factor: float = 15.0
    peak_bytes: int = 256 << 20  # traced peak per case, plus the bytes graphrt's budgets admitted
    bytes_per_second: int = 64 << 20
    trace_memory: bool = True
    lowered: bool = False     # lower graphrt's own limits to the numbers below while fuzzing
    param_bytes: int = 64 << 20
    folded_bytes: int = 64 << 20
    config_bytes: int = 16 << 20
    hdf5_seconds: float = 1.0


@dataclass(frozen=True)
class Seed:
    """A real file to mutate; ``model`` is the file loaded when the mutated one is its weights."""

    path: Path
    options: dict = field(default_factory=dict, hash=False)
    model: Path | None = None
    weight: int = 10

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def suffix(self) -> str:
        name = self.path.name
        return ".keras" if name.endswith(".keras") else "-symbol.json" if name.endswith(
            "-symbol.json") else self.path.suffix


@dataclass(frozen=True)
class Target:
    """One parser: its seeds and its mutations as ``(weight, mutator)`` pairs."""

    name: str
    seeds: Callable[[], Sequence[Seed]]
    mutators: tuple
    available: Callable[[], str | None] = lambda: None  # a reason to skip, or None


@dataclass
class Failure:
    target: str
    seed: str
    index: int
    description: str
    kind: str          # exception | timeout | memory
    error: str
    trace: str
    data: bytes
    seconds: float
    peak: int


@dataclass
class Report:
    target: str
    cases: int = 0
    loaded: int = 0
    rejected: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None

    def row(self) -> str:
        if self.skipped:
            return f"| {self.target} | 0 | - | - | - | skipped: {self.skipped} |"
        rate = self.cases / self.seconds if self.seconds else 0.0
        return (f"| {self.target} | {self.cases} | {self.loaded} | {self.rejected} | "
                f"{len(self.failures)} | {rate:.0f} cases/s |")


TABLE_HEADER = ("| format | cases | loaded | GraphrtError | failures | speed |\n"
                "|---|---|---|---|---|---|")


# ----------------------------------------------------------------------------------- targets

def _caffe_seeds() -> list[Seed]:
    d = SHARED / "models/caffe"
    mnist, cifar = {"input_shape": (1, 28, 28)}, {"input_shape": (3, 32, 32)}
    return [Seed(d / "lenet.prototxt"), Seed(d / "lenet_train_test.prototxt", mnist),
            Seed(d / "cifar10_quick.prototxt"), Seed(d / "cifar10_quick_train_test.prototxt", cifar),
            Seed(d / "cifar10_full.prototxt"),
            Seed(d / "digits_lenet.prototxt", {**mnist, "stage": ["deploy"], "classes": 10}),
            Seed(d / "digits_lenet.prototxt", {**mnist, "stage": ["val"], "classes": 10}),
            Seed(d / "bvlc_googlenet_deploy.prototxt", weight=2),
            Seed(d / "bvlc_alexnet_deploy.prototxt", weight=1)]


def _caffemodel_seeds() -> list[Seed]:
    d = SHARED / "models/caffe"
    return [Seed(d / "lenet_iter_10000.caffemodel", model=d / "lenet.prototxt")]


def _mxnet_json_seeds() -> list[Seed]:
    d = SHARED / "fixtures/mxnet"
    return [Seed(d / "lenet-symbol.json", {"input_shape": (1, 28, 28)}),
            Seed(d / "seed_alexnet-symbol.json", {"input_shape": (3, 224, 224)}, weight=3)]


def _mxnet_params_seeds() -> list[Seed]:
    d = SHARED / "fixtures/mxnet"
    return [Seed(d / "lenet-0000.params", {"input_shape": (1, 28, 28)},
                 model=d / "lenet-symbol.json")]


def _keras_json_seeds() -> list[Seed]:
    d = SHARED / "fixtures/keras"
    return [Seed(d / f) for f in ("seed_ann.json", "seed_cnn_32.json", "seed_cnn_100.json")]


def _keras_archive_seeds() -> list[Seed]:
    d = SHARED / "fixtures/keras"
    return [Seed(d / "seed_ann.keras"), Seed(d / "seed_cnn_32.keras", weight=5)]


def _onnx_seeds() -> list[Seed]:
    return [Seed(SHARED / "fixtures/onnx/torch_lenet.onnx")]


def _onnx_available() -> str | None:
    from graphrt.frontends import loading

    if "onnx" not in getattr(loading, "FORMATS", ()):
        return "graphrt.load does not read .onnx"
    try:
        import onnx  # noqa: F401
    except ImportError:
        return "the onnx package is not installed"
    return None


_NPZ_DIR: list[Path] = []


def _npz_seeds() -> list[Seed]:
    """graphrt archives saved from the real models (made once per process)."""
    import graphrt
    from graphrt.frontends.npz import save_graph

    if not _NPZ_DIR:
        _NPZ_DIR.append(Path(tempfile.mkdtemp(prefix="graphrt-fuzz-npz-")))
    d, c, m, k = _NPZ_DIR[0], SHARED / "models/caffe", SHARED / "fixtures/mxnet", SHARED / "fixtures/keras"
    made = {"caffe_lenet.npz": lambda: graphrt.load(c / "lenet.prototxt",
                                                     weights=c / "lenet_iter_10000.caffemodel"),
            "mxnet_lenet.npz": lambda: graphrt.load(m / "lenet-symbol.json", input_shape=(1, 28, 28),
                                                     weights=m / "lenet-0000.params"),
            "keras_cnn_32.npz": lambda: graphrt.load(k / "seed_cnn_32.keras")}
    for name, build in made.items():
        if not (d / name).exists():
            save_graph(build(), d / name)
    return [Seed(d / name) for name in made]


def _shared_present() -> str | None:
    return None if SHARED.is_dir() else f"{SHARED} is not present"


def _with_bytes(mutator):
    """Mix a structure-aware mutator with plain byte mutations (3 : 1)."""
    return ((3, mutator), (1, M.byte_mutation))


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("prototxt", _caffe_seeds, _with_bytes(M.text_mutation), _shared_present),
    Target("caffemodel", _caffemodel_seeds, _with_bytes(B.pb_mutation), _shared_present),
    Target("mxnet-json", _mxnet_json_seeds, _with_bytes(M.json_mutation), _shared_present),
    Target("mxnet-params", _mxnet_params_seeds, _with_bytes(B.params_mutation), _shared_present),
    Target("keras-json", _keras_json_seeds, _with_bytes(M.json_mutation), _shared_present),
    Target("keras-archive", _keras_archive_seeds, ((1, B.zip_mutation),), _shared_present),
    Target("onnx", _onnx_seeds, _with_bytes(B.pb_mutation),
           lambda: _shared_present() or _onnx_available()),
    Target("npz", _npz_seeds, ((1, B.zip_mutation),), _shared_present),
)}


# ------------------------------------------------------------------------------------ cases

@contextlib.contextmanager
def graphrt_limits(limits: Limits):
    """With ``limits.lowered``, lower graphrt's own limits for the duration."""
    from graphrt import limits as L

    if not limits.lowered:
        yield
        return
    wanted = {"MAX_PARAM_BYTES": limits.param_bytes, "MAX_FOLDED_BYTES": limits.folded_bytes,
              "MAX_DECOMPRESSED_BYTES": limits.param_bytes,
              "MAX_CONFIG_BYTES": limits.config_bytes, "HDF5_SECONDS": limits.hdf5_seconds}
    saved = {n: getattr(L, n) for n in wanted}
    for n in saved:
        setattr(L, n, wanted[n])
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(L, n, v)


def make_case(target: Target, seeds: Sequence[Seed], ch: M.Chooser) -> tuple[Seed, bytes, str]:
    """Pick a seed and apply one to three of the target's mutations."""
    seed = ch.weighted([(s.weight, s) for s in seeds])
    data = seed.path.read_bytes()
    steps = []
    for _ in range(ch.weighted([(6, 1), (3, 2), (1, 3)])):
        mutate = ch.weighted(target.mutators)
        try:
            data, what = mutate(data, ch)
        except Exception as err:  # noqa: BLE001 - a bug of the fuzzer itself: note it, go on
            data, what = M.byte_mutation(data, ch)
            what = f"[{mutate.__name__} failed: {type(err).__name__}: {err}] {what}"
        steps.append(what)
    return seed, data, f"{seed.name}: " + "; ".join(steps)


def load_case(seed: Seed, path: Path):
    """Load ``path`` (the mutated copy of ``seed``) as the seed itself is loaded."""
    import graphrt

    options = dict(seed.options)
    if seed.model is not None:
        return graphrt.load(seed.model, weights=path, **options)
    return graphrt.load(path, **options)


def _alarm(signum, frame):
    raise CaseTimeout()


def _bounds(limits: Limits, admitted: int) -> tuple[float, int]:
    """The case's CPU-second and traced-byte bounds, given the bytes graphrt's budgets admitted."""
    return (limits.seconds + admitted / limits.bytes_per_second, limits.peak_bytes + admitted)


@contextlib.contextmanager
def _hard_stop(limits: Limits):
    """SIGPROF/SIGALRM raise CaseTimeout in a case that runs far past any bound (a hang)."""
    if limits.seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return
    hard = limits.seconds * limits.hard_factor
    old = signal.signal(signal.SIGALRM, _alarm), signal.signal(signal.SIGPROF, _alarm)
    signal.setitimer(signal.ITIMER_REAL, hard * limits.wall_factor)
    signal.setitimer(signal.ITIMER_PROF, hard)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGALRM, old[0])
        signal.signal(signal.SIGPROF, old[1])


def run_case(seed: Seed, data: bytes, workdir: Path, limits: Limits) -> tuple[str, str, str, float, int]:
    """Run one case: ``(status, error, traceback, seconds, peak)``; status is ``loaded``,
    ``rejected`` (a GraphrtError), or a failure kind: ``exception``, ``timeout``, ``memory``."""
    from graphrt import limits as graphrt_limits_module

    taken_bytes = graphrt_limits_module.taken_bytes

    path = workdir / ("case" + seed.suffix)
    path.write_bytes(data)
    if limits.trace_memory:
        tracemalloc.start()
        tracemalloc.reset_peak()
    status, error, trace = "loaded", "", ""
    start, cpu, taken = time.perf_counter(), time.process_time(), taken_bytes()
    try:
        with _hard_stop(limits):
            load_case(seed, path)
    except CaseTimeout:
        hard = limits.seconds * limits.hard_factor
        status, error = "timeout", (f"no result within {hard:g} s of CPU time or "
                                    f"{hard * limits.wall_factor:g} s of wall time")
        trace = traceback.format_exc()
    except GraphrtError as err:
        status, error = "rejected", f"{type(err).__name__}: {err}"
    except BaseException as err:  # noqa: BLE001 - the point: anything else is a finding
        if isinstance(err, KeyboardInterrupt):
            raise
        status, error = "exception", f"{type(err).__name__}: {err}"[:2000]
        trace = traceback.format_exc()
    finally:
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = 0
        if limits.trace_memory:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    admitted = taken_bytes() - taken
    max_cpu, max_peak = _bounds(limits, admitted)
    if status in ("loaded", "rejected"):
        if limits.seconds > 0 and cpu > max_cpu:
            status, error = "timeout", (f"took {cpu:.2f} s of CPU time (bound {max_cpu:.2f} s: "
                                        f"{admitted >> 20} MiB admitted)")
        elif limits.trace_memory and peak > max_peak:
            status, error = "memory", (f"peak {peak >> 20} MiB (bound {max_peak >> 20} MiB: "
                                       f"{admitted >> 20} MiB admitted)")
    return status, error, trace, seconds, peak


class Runner:
    """Runs cases of one target into a :class:`Report` (seeds and a scratch folder kept)."""

    def __init__(self, target: Target, limits: Limits = Limits()):
        self.target, self.limits = target, limits
        self.report = Report(target.name)
        self.skipped = target.available()
        self.report.skipped = self.skipped
        self.seeds = [] if self.skipped else list(target.seeds())
        self.workdir = Path(tempfile.mkdtemp(prefix=f"graphrt-fuzz-{target.name}-"))
        self.on_case: Callable[[int, Seed, bytes, str], None] | None = None

    def one(self, ch: M.Chooser, index: int | None = None) -> None:
        index = self.report.cases if index is None else index
        seed, data, description = make_case(self.target, self.seeds, ch)
        if self.on_case is not None:
            self.on_case(index, seed, data, description)
        logging.disable(logging.WARNING)  # frontends warn about what they skip: not findings
        try:
            with graphrt_limits(self.limits):
                status, error, trace, seconds, peak = run_case(seed, data, self.workdir,
                                                               self.limits)
        finally:
            logging.disable(logging.NOTSET)
        r = self.report
        r.cases += 1
        r.seconds += seconds
        if status == "loaded":
            r.loaded += 1
        elif status == "rejected":
            r.rejected += 1
            kind = error.split(":", 1)[0]
            r.errors[kind] = r.errors.get(kind, 0) + 1
        else:
            r.failures.append(Failure(self.target.name, seed.name, index, description, status,
                                      error, trace, data, seconds, peak))

    def close(self) -> Report:
        shutil.rmtree(self.workdir, ignore_errors=True)
        return self.report


def fuzz_random(target: Target, cases: int, seed: int = 0, limits: Limits = Limits(),
                start: int = 0, on_case=None) -> Report:
    """``cases`` cases; case ``i`` is made from ``random.Random(f"{seed}/{target}/{i}")`` alone,
    so any case can be remade by its index."""
    runner = Runner(target, limits)
    runner.on_case = on_case
    if runner.skipped:
        return runner.close()
    try:
        for i in range(start, start + cases):
            runner.one(M.RandomChooser(random.Random(f"{seed}/{target.name}/{i}")), i)
    finally:
        runner.close()
    return runner.report


def fuzz_hypothesis(target: Target, cases: int, seed: int = 0, limits: Limits = Limits(),
                    derandomize: bool = False, on_case=None) -> Report:
    """``cases`` cases whose every choice hypothesis draws (``st.data()``); failures are
    collected, not raised, so the run goes on (no shrinking: each failure keeps its bytes)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    runner = Runner(target, limits)
    runner.on_case = on_case
    if runner.skipped:
        return runner.close()

    @settings(max_examples=cases, deadline=None, database=None, derandomize=derandomize,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data):
        if runner.report.cases < cases:
            runner.one(M.HypothesisChooser(data))

    if not derandomize:
        case = hseed(seed)(case)
    try:
        case()
    finally:
        runner.close()
    return runner.report


def save_failures(failures: Sequence[Failure], folder: Path) -> list[Path]:
    """Write each failure's bytes and a ``.txt`` with its description, error and traceback."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for f in failures:
        seed = next((s for s in TARGETS[f.target].seeds() if s.name == f.seed), None)
        stem = f"{f.target}-{f.index:06d}"
        data_path = folder / (stem + (seed.suffix if seed else ".bin"))
        data_path.write_bytes(f.data)
        (folder / (stem + ".txt")).write_text(
            f"target: {f.target}\nseed: {f.seed}\ncase: {f.index}\nmutations: {f.description}\n"
            f"failure: {f.kind}: {f.error}\nseconds: {f.seconds:.3f}\npeak: {f.peak} bytes\n"
            f"replay: python bench/fuzz.py --replay {data_path} --formats {f.target} "
            f"--replay-seed {f.seed}\n\n{f.trace}")
        written.append(data_path)
    return written


def replay(target: Target, seed_name: str, path: Path, limits: Limits = Limits()):
    """Run a saved case again: ``(status, error, traceback, seconds, peak)``."""
    seed = next(s for s in target.seeds() if s.name == seed_name)
    workdir = Path(tempfile.mkdtemp(prefix="graphrt-replay-"))
    try:
        with graphrt_limits(limits):
            return run_case(seed, Path(path).read_bytes(), workdir, limits)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


__all__ = ["TARGETS", "Target", "Seed", "Limits", "Report", "Failure", "fuzz_random",
           "fuzz_hypothesis", "run_case", "make_case", "save_failures", "replay", "TABLE_HEADER",
           "CaseTimeout"]
