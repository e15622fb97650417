"""The argument parser: every option of every command, each with its help text, and each name with
one meaning across commands (``--caffe-stage``: Caffe's stage; ``--stage``: the graph stage, viz
only)."""
from __future__ import annotations

import argparse

from .bench import PEERS, cmd_bench
from .draw import cmd_plan, cmd_viz
from .profile import cmd_profile
from .run import cmd_run
from .train import cmd_train

MODEL_HELP = ("model file: .prototxt (Caffe), -symbol.json (MXNet), .keras or .json (Keras), .onnx, "
              ".npz (saved by graphrt), or a .py of your own that defines build()")


class _CaffeStageMoved(argparse.Action):
    """``--stage`` outside viz: say which option the user means."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error("--stage is the graph stage of 'graphrt viz'; Caffe's stage is --caffe-stage")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _model_args(p: argparse.ArgumentParser, batch: int = 1, graph_stage: bool = False) -> None:
    """The options every command shares (``graph_stage``: the command has its own ``--stage``)."""
    from ..frontends.loading import FORMATS

    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--weights", help="weights file: .caffemodel (Caffe) or .params (MXNet)")
    p.add_argument("--format", choices=FORMATS, help="the model's format, when its extension does not say")
    p.add_argument("--input-shape", type=int, nargs="+", metavar="D",
                   help="input shape without the batch (e.g. 3 224 224), for files that do not state it")
    p.add_argument("--phase", default="TEST", choices=["TEST", "TRAIN"], type=str.upper,
                   help="Caffe phase: which layers a train/test net includes (default TEST)")
    p.add_argument("--caffe-stage", dest="caffe_stage", action="append", metavar="STAGE",
                   help="Caffe stage for include/exclude rules (repeatable)")
    if not graph_stage:
        p.add_argument("--stage", nargs="?", action=_CaffeStageMoved, help=argparse.SUPPRESS)
    p.add_argument("--classes", type=int, help="outputs of a Caffe InnerProduct without num_output")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                   help="where to run: cpu (default), cuda, or auto (cuda when CuPy sees a GPU)")
    p.add_argument("--batch", type=_positive, default=batch, help=f"batch size (default {batch})")
    p.add_argument("--threads", type=_positive, metavar="N",
                   help="threads of a cpu step (default: the cores this process may use)")
    p.add_argument("--algorithms", choices=["measure", "default", "im2col", "im2col_nhwc", "pointwise", "winograd"],
                   help="how the cpu device picks each convolution's algorithm: measure (time them "
                        "at compile time, cached; the default), default (a fixed rule), or one "
                        "algorithm wherever it applies (default: $GRAPHRT_ALGORITHMS, else measure)")
    p.add_argument("--opt-level", type=int, default=3, choices=[0, 1, 2, 3],
                   help="optimization level: 0 none ... 3 all passes (default 3; see the README)")


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def parser() -> argparse.ArgumentParser:
    """The ``graphrt`` parser with its six commands."""
    top = argparse.ArgumentParser(
        prog="graphrt", description="Run existing model definitions fast.",
        epilog="'graphrt COMMAND --help' for a command's options. Examples: graphrt run "
               "model.prototxt --weights model.caffemodel; graphrt viz model.prototxt -o model.html; "
               "graphrt plan model.prototxt -o plan.png; graphrt bench model.prototxt --vs torch")
    top.add_argument("--version", action="version", version="graphrt 0.1.0")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _run_parser(sub)
    _bench_parser(sub)
    _profile_parser(sub)
    _viz_parser(sub)
    _plan_parser(sub)
    _train_parser(sub)
    return top


def _run_parser(sub) -> None:
    run = sub.add_parser("run", help="run a model on one batch and print its outputs")
    _model_args(run)
    run.add_argument("--input", metavar="X.npy|X.npz",
                     help="the input batch: .npy, or .npz with one array per input (default: random normal)")
    run.add_argument("--data-layers", action="store_true",
                     help="Caffe: run the first batch of the net's own data layer (its LMDB, image "
                          "list or HDF5 files) in --phase")
    run.add_argument("--output", metavar="Y.npz|Y.npy",
                     help="write every output: .npz by output name (.npy for a single output)")
    run.add_argument("--top-k", type=_positive, default=5, metavar="K",
                     help="classes shown per item for a classifier's probabilities (default 5)")
    _json_flag(run)
    run.set_defaults(fn=cmd_run)


def _bench_parser(sub) -> None:
    bench = sub.add_parser("bench", help="images/s of graphrt, and of a peer measured in the same run")
    _model_args(bench, batch=16)
    bench.add_argument("--vs", action="append", choices=sorted(PEERS),
                       help="also time this peer on the same batch (repeatable)")
    bench.add_argument("--iterations", type=_positive, default=20, help="timed batches (default 20)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed batches first (default 2)")
    _json_flag(bench)
    bench.set_defaults(fn=cmd_bench)


def _profile_parser(sub) -> None:
    prof = sub.add_parser("profile", help="where a step's time goes: per-node times and "
                                          "host<->device copies")
    _model_args(prof)
    prof.add_argument("--iterations", type=_positive, default=10,
                      help="batches streamed for the copy counts, and runs each node is timed over "
                           "(default 10)")
    prof.add_argument("--layers", type=int, default=20, metavar="K",
                      help="show the K slowest nodes (default 20; 0: all)")
    prof.add_argument("--naive", action="store_true", help="also run the per-op copy mode")
    prof.add_argument("--html", metavar="OUT.html", help="also write the graph page with per-node times")
    prof.add_argument("--json", metavar="OUT", nargs="?", const="-",
                      help="print the report as JSON (or write it to OUT)")
    prof.set_defaults(fn=cmd_profile)


def _viz_parser(sub) -> None:
    viz = sub.add_parser("viz", help="draw a graph stage: self-contained HTML, SVG, PNG or DOT")
    _model_args(viz, graph_stage=True)
    viz.add_argument("--stage", dest="graph_stage", default="optimized", metavar="STAGE",
                     help="graph stage: loaded, optimized (default), placed, or a pass name (the graph "
                          "right after it)")
    viz.add_argument("-o", "--output", required=True, help="OUT.html, .svg, .png or .dot")
    viz.add_argument("--layout", default="auto", choices=["auto", "dot", "builtin"],
                     help="Graphviz dot (auto: when installed) or the built-in layered layout")
    viz.add_argument("--profile", type=int, default=0, metavar="N",
                     help="time every node over N runs and show the times on the page")
    _json_flag(viz)
    viz.set_defaults(fn=cmd_viz)


def _plan_parser(sub) -> None:
    plan = sub.add_parser("plan", help="draw the memory plan: tensors in (step, arena offset) space")
    _model_args(plan)
    plan.add_argument("-o", "--output", required=True, help="OUT.png (or .svg, .pdf)")
    _json_flag(plan)
    plan.set_defaults(fn=cmd_plan)


def _train_parser(sub) -> None:
    train = sub.add_parser("train", help="train a model with SGD on an .npz of inputs and labels, "
                                         "or run a Caffe solver.prototxt (as caffe train does)")
    _model_args(train, batch=64)
    train.add_argument("--data", help=".npz with arrays x and y, or 'digits' (not for a solver)")
    train.add_argument("--workers", type=_positive, help="decoding worker processes of a solver's "
                       "data layers (default: half the cores)")
    train.add_argument("--epochs", type=_positive, default=1, help="passes over the data (default 1)")
    train.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    train.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay (default 0)")
    train.add_argument("--loss", default="auto", choices=["auto", "softmax_cross_entropy", "nll_loss"],
                       help="the loss (auto: the model's own, else cross-entropy on its output)")
    train.add_argument("--save", metavar="OUT.npz", help="save the trained model")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over the torch.distributed group torchrun starts (gloo): "
                            "--batch is the global batch, each rank trains on its shard; rank 0 "
                            "reports and saves")
    _json_flag(train)
    train.set_defaults(fn=cmd_train)
