"""Data sources: the records a framework's own input pipeline reads, as batches of uint8 images
(with labels and the per-image windows of the fused ``image_transform``) that ``exe.stream(...)``
and ``Trainer.fit(...)`` take directly. Images cross the bus as the bytes they are stored as; crop,
mirror, mean and scale run on the device as the graph's first op.

- :mod:`.base`: :class:`ImageSource` (ordered or shuffled reading, decoding a batch at a time in
  worker processes, batches that run across the end of the records when repeating);
- :mod:`.caffe`: Caffe's ``Data`` (LMDB of ``Datum`` records), ``ImageData``, ``HDF5Data`` and
  :func:`net_sources`, the sources of a prototxt's data layers;
- :mod:`.recordio`: MXNet's ``.rec``/``.idx`` image records (:class:`RecordIO`, as
  ``mx.io.ImageRecordIter`` reads them), with :meth:`RecordIO.attach` to put the fused transform in
  front of a graph's float input.

Sits above ``frontends/`` (it reads Caffe's messages and ``transform_param`` through the Caffe
frontend) and below ``training/``; imports ``ir``, ``ops``, ``frontends``.
"""
from .base import ImageSource, default_workers  # noqa: F401
from .caffe import (HDF5Source, ImageListSource, LMDBSource, decode_datum, decode_image,  # noqa: F401
                    net_sources)
from .recordio import RecordIO  # noqa: F401
