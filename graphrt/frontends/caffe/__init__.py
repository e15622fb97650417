"""Caffe: ``.prototxt`` nets (``prototxt``: a protobuf text-format reader with line and column
errors), ``.caffemodel`` weights (``caffemodel``: a wire-format reader that checks sizes before
allocating), the layer catalogue (``layers``) and the net builder (``net``: phase/stage rules,
in-place blobs, fillers). May import ``ir``, ``ops`` and ``frontends.initializers``.
"""
from .net import load_caffe  # noqa: F401
