"""Caffe's ``solver.prototxt`` (a ``SolverParameter``) as a :class:`Solver`: what ``caffe train``
reads, checked field by field (an unknown field is a :class:`~graphrt.ir.errors.ParseError` naming
the line and the nearest known field; a field graphrt cannot honour, an
:class:`~graphrt.ir.errors.UnsupportedError`). :mod:`graphrt.training.caffe_solver` runs it.

The nets: ``net`` (one train/test prototxt, TRAIN and TEST phases) or ``train_net`` and one
``test_net`` (with ``test_iter``); paths resolve as Caffe resolves them, from the working
directory. ``type`` is ``SGD``, ``Nesterov`` or ``Adam`` (the legacy ``solver_type`` enum too);
``AdaGrad``, ``AdaDelta`` and ``RMSProp`` are refused. ``solver_mode`` ``CPU`` runs on the cpu
device, ``GPU`` on cuda where there is a GPU (``device_id`` picks it: ``graphrt train`` makes that
device), else on the cpu.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ...ir.errors import ParseError, UnsupportedError
from .prototxt import load_prototxt
from .schema import suggest

TYPES = ("SGD", "Nesterov", "Adam")
OTHER_TYPES = ("AdaGrad", "AdaDelta", "RMSProp")
LEGACY_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
                "ADADELTA": "AdaDelta", "ADAM": "Adam"}
POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
# fields graphrt reads; the rest of SolverParameter is known and either ignored (logging, snapshot
# formats) or refused (below)
READ = {"net", "train_net", "test_net", "test_iter", "test_interval", "test_initialization",
        "base_lr", "display", "average_loss", "max_iter", "iter_size", "lr_policy", "gamma", "power",
        "momentum", "momentum2", "delta", "weight_decay", "regularization_type", "stepsize",
        "stepvalue", "snapshot", "snapshot_prefix", "snapshot_after_train", "solver_mode",
        "device_id", "random_seed", "type", "solver_type", "test_compute_loss"}
IGNORED = {"snapshot_format", "snapshot_diff", "debug_info", "layer_wise_reduce", "train_state",
           "test_state"}
REFUSED = {"net_param": "an inline net (give it as a file with net:)",
           "train_net_param": "an inline net (give it as a file with train_net:)",
           "test_net_param": "an inline net (give it as a file with test_net:)",
           "clip_gradients": "gradient clipping", "rms_decay": "RMSProp", "weights": "initial weights "
           "from a caffemodel (pass weights to graphrt.load)"}


@dataclasses.dataclass
class Solver:
    """A ``SolverParameter``; ``file`` is the solver's own path (for errors)."""

    file: str
    train_net: str
    test_nets: list
    test_iter: list
    test_interval: int = 0
    test_initialization: bool = True
    base_lr: float = 0.01
    display: int = 0
    average_loss: int = 1
    max_iter: int = 0
    iter_size: int = 1
    lr_policy: str = "fixed"
    gamma: float = 0.1
    power: float = 1.0
    momentum: float = 0.0
    momentum2: float = 0.999
    delta: float = 1e-8
    weight_decay: float = 0.0
    regularization_type: str = "L2"
    stepsize: int = 0
    stepvalue: tuple = ()
    snapshot: int = 0
    snapshot_prefix: str = ""
    snapshot_after_train: bool = True
    solver_mode: str = "GPU"
    device_id: int = 0
    random_seed: int = -1
    type: str = "SGD"

    @property
    def device(self) -> str:
        """``cpu`` for CPU mode; GPU mode runs on cuda where CuPy sees a GPU, else on the cpu."""
        return "cpu" if self.solver_mode == "CPU" else "auto"


def is_solver(path) -> bool:
    """True for a prototxt that is a ``SolverParameter`` (it names a net and has no layers)."""
    from .prototxt import parse_prototxt

    p = Path(path)
    if p.suffix != ".prototxt" or not p.is_file():
        return False
    try:
        msg = parse_prototxt(p.read_bytes(), str(p))
    except ParseError:
        return False
    names = {name for name, _ in msg.fields}
    return bool(names & {"net", "train_net", "base_lr"}) and not names & {"layer", "layers"}


def load_solver(path) -> Solver:
    """Read and check a ``solver.prototxt``; see the module docstring."""
    file = str(path)
    msg = load_prototxt(path)
    for name, value, line in msg.items():
        if name in REFUSED:
            raise UnsupportedError(f"solver field {name!r}: graphrt does not support "
                                   f"{REFUSED[name]}", file=file, line=line)
        if name not in READ | IGNORED:
            raise ParseError(f"unknown solver field {name!r}{suggest(name, READ | IGNORED)}",
                             file=file, line=line)

    def one(name, default, kind=float):
        value = msg.get(name, default)
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ParseError(f"solver field {name!r} must be a {kind.__name__}, got {value!r}",
                             file=file, line=msg.line_of(name)) from None

    net, train_net, test_nets = msg.get("net"), msg.get("train_net"), msg.getall("test_net")
    if (net is None) == (train_net is None):
        raise ParseError("the solver needs exactly one of net and train_net", file=file)
    if net is not None and test_nets:
        raise ParseError("the solver gives net and test_net: give train_net with test_net, or net "
                         "alone", file=file, line=msg.line_of("test_net"))
    test_iter = [int(v) for v in msg.getall("test_iter")]
    test_nets = test_nets if train_net is not None else ([net] * len(test_iter) or [net])
    if len(test_iter) not in (0, len(test_nets)) and train_net is not None:
        raise ParseError(f"{len(test_iter)} test_iter values for {len(test_nets)} test nets",
                         file=file, line=msg.line_of("test_iter"))
    kind = msg.get("type")
    if kind is None:
        kind = LEGACY_TYPES.get(str(msg.get("solver_type", "SGD")), str(msg.get("solver_type")))
    if kind in OTHER_TYPES:
        raise UnsupportedError(f"solver type {kind!r}: graphrt runs {', '.join(TYPES)}", file=file,
                               line=msg.line_of("type") or msg.line_of("solver_type"))
    if kind not in TYPES:
        raise ParseError(f"unknown solver type {kind!r}{suggest(kind, TYPES + OTHER_TYPES)}",
                         file=file, line=msg.line_of("type"))
    policy = str(msg.get("lr_policy", "fixed"))
    if policy not in POLICIES:
        raise ParseError(f"unknown lr_policy {policy!r}{suggest(policy, POLICIES)}", file=file,
                         line=msg.line_of("lr_policy"))
    if policy == "sigmoid":
        raise UnsupportedError("lr_policy 'sigmoid' is not supported", file=file,
                               line=msg.line_of("lr_policy"))
    regularization = str(msg.get("regularization_type", "L2"))
    if regularization not in ("L1", "L2"):
        raise ParseError(f"regularization_type must be L1 or L2, got {regularization!r}", file=file,
                         line=msg.line_of("regularization_type"))
    mode = str(msg.get("solver_mode", "GPU"))
    if mode not in ("CPU", "GPU"):
        raise ParseError(f"solver_mode must be CPU or GPU, got {mode!r}", file=file,
                         line=msg.line_of("solver_mode"))
    solver = Solver(
        file=file, train_net=str(net if net is not None else train_net), test_nets=list(test_nets),
        test_iter=test_iter, test_interval=one("test_interval", 0, int),
        test_initialization=bool(msg.get("test_initialization", True)),
        base_lr=one("base_lr", 0.01), display=one("display", 0, int),
        average_loss=one("average_loss", 1, int), max_iter=one("max_iter", 0, int),
        iter_size=one("iter_size", 1, int), lr_policy=policy, gamma=one("gamma", 0.1),
        power=one("power", 1.0), momentum=one("momentum", 0.0), momentum2=one("momentum2", 0.999),
        delta=one("delta", 1e-8), weight_decay=one("weight_decay", 0.0),
        regularization_type=regularization, stepsize=one("stepsize", 0, int),
        stepvalue=tuple(int(v) for v in msg.getall("stepvalue")), snapshot=one("snapshot", 0, int),
        snapshot_prefix=str(msg.get("snapshot_prefix", "")),
        snapshot_after_train=bool(msg.get("snapshot_after_train", True)), solver_mode=mode,
        device_id=one("device_id", 0, int), random_seed=one("random_seed", -1, int), type=kind)
    if solver.max_iter < 1:
        raise ParseError("the solver needs max_iter >= 1", file=file, line=msg.line_of("max_iter"))
    if solver.test_interval and not solver.test_iter:
        raise ParseError("test_interval is set but no test_iter", file=file,
                         line=msg.line_of("test_interval"))
    for name in [solver.train_net] + solver.test_nets:
        if not Path(name).is_file():
            raise ParseError(f"net {name!r} does not exist (Caffe resolves it from the working "
                             f"directory, {Path.cwd()})", file=file, line=msg.line_of(
                                 "net" if net is not None else "train_net"))
    return solver
