"""The ``graphrt`` command line: one module per command over the public API.

    graphrt run MODEL [--weights W] [--batch N] [--input X.npy|.npz] [--output Y.npz] [--top-k K]
    graphrt bench MODEL [--vs torch|onnxruntime] [--batch N] [--iterations N]
    graphrt profile MODEL [--iterations N] [--layers K] [--naive] [--html OUT.html] [--json [OUT]]
    graphrt viz MODEL [--stage loaded|optimized|placed|PASS] -o OUT.html|.svg|.png|.dot
    graphrt plan MODEL -o plan.png [--batch N]
    graphrt train MODEL --data FILE.npz|digits [--epochs N] [--lr LR] [--save OUT.npz]

MODEL is a model file (``.prototxt``, ``-symbol.json``, ``.keras``, Keras ``.json``, ``.onnx``,
``.npz``) or a Python file of your own that defines ``build()`` returning a model or Graph (it is run
as Python: only name files you wrote or trust). An option means the same in every command
(``--caffe-stage`` is always Caffe's stage; ``--stage`` exists only in ``viz``, for the graph stage).
Errors are one line on stderr and exit status 2, worded for the command line (``--input-shape C H W``
where the library says ``input_shape=``). ``--json`` prints one JSON object on stdout for scripts;
progress bars (for runs longer than a second) go to stderr, and only on a terminal.

Modules: ``options`` (the argument parser), ``common`` (loading a model, batches, output paths,
wording), ``run``, ``bench``, ``profile``, ``draw`` (viz and plan), ``train``. The command line sits
at the top of the layering with the public API: it may import any stage.
"""
from __future__ import annotations

import sys

from ..ir.errors import GraphrtError
from .common import cli_wording, load_model  # noqa: F401  (used by tests and scripts)
from .options import parser
from .profile import format_copies  # noqa: F401  (the copy table, for scripts)


def main(argv=None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except GraphrtError as err:
        print(f"graphrt: error: {type(err).__name__}: {cli_wording(str(err))}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:  # e.g. an unwritable --output
        print(f"graphrt: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("graphrt: interrupted", file=sys.stderr)
        return 130


