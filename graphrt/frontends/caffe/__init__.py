"""Caffe: ``.prototxt`` nets (``prototxt``: a protobuf text-format reader with line and column
errors), ``.caffemodel`` weights (``caffemodel``: a wire-format reader that checks sizes before
allocating), the layer catalogue (``layers``) and the net builder (``net``: phase/stage rules,
in-place blobs, fillers), ``transform_param`` as the fused ``image_transform`` node and mean files
(``transform``), and ``solver.prototxt`` (``solver``: :func:`load_solver`). May import ``ir``,
``ops`` and ``frontends.initializers``.
"""
from .net import load_caffe  # noqa: F401
from .solver import Solver, load_solver  # noqa: F401
