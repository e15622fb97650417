"""Frontends: turn a model definition into a :class:`~graphrt.ir.Graph`.

One subpackage per format — ``caffe/`` (prototxt, caffemodel), ``keras/`` (the ``Sequential``
builder, ``.keras`` archives and JSON configs), ``mxnet/`` (symbols and ``.params``), ``torch7/``
(``nn`` containers in Python), ``onnx/`` (import, export, the ONNX backend and ``from_torch``) —
plus graphrt's own ``.npz`` format (``npz``), zip members read within the load's budget
(``archive``; the budgets themselves are :mod:`graphrt.limits`), seeded weight initializers
(``initializers``) and the shared readers (``files``).
:func:`load` (``loading``) picks the frontend by extension or content and imports only that one, so
optional packages stay optional. May import ``ir`` and ``ops`` only. Every user mistake raises a
:class:`graphrt.GraphrtError` naming the layer, file and line.
"""
from .loading import load  # noqa: F401
