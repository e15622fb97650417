"""Frontends: turn a model definition into a :class:`~graphrt.graph.Graph`.

Submodules (import the one you need; this package imports none of them, so optional packages
stay optional):

- :mod:`graphrt.frontends.keras` — a Keras-like ``Sequential`` builder (Keras 1 and 2/3 spellings).
- :mod:`graphrt.frontends.torch7` — Lua Torch7's ``nn`` containers and modules in Python.
- :mod:`graphrt.frontends.caffe`, :mod:`graphrt.frontends.mxnet` — Caffe and MXNet frontends.
- :mod:`graphrt.frontends.keras_io`, :mod:`graphrt.frontends.mxnet_io`,
  :mod:`graphrt.frontends.prototxt`, :mod:`graphrt.frontends.caffemodel` — readers of Keras,
  MXNet and Caffe files.

Every user mistake raises a :class:`graphrt.GraphrtError` naming the layer, file and line.
"""
