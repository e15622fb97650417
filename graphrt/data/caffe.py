"""Caffe's data layers as sources: ``Data`` (LMDB of ``Datum`` records), ``ImageData`` (a list
file of images and labels), ``HDF5Data`` (a list of HDF5 files); :func:`net_sources` makes the source
of each data layer a prototxt's phase includes (opening nothing), and :func:`decode_datum` reads one
``Datum``.

A ``Datum`` (caffe.proto) is read from the protobuf wire format: ``channels`` = 1, ``height`` = 2,
``width`` = 3, ``data`` = 4 (bytes: uint8 C x H x W, or an encoded image when ``encoded`` = 7 is
set), ``label`` = 5, ``float_data`` = 6 (repeated float, for records without bytes). Encoded JPEG
and PNG records are decoded with Pillow, colour images in Caffe's (OpenCV's) BGR channel order,
grey ones as one channel. Paths (``source``, ``root_folder``, ``mean_file``) resolve as Caffe
resolves them, from the working directory. LevelDB (Caffe's default backend) has no maintained
Python binding: a clear :class:`~graphrt.ir.errors.UnsupportedError`.
"""
from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np

from ..frontends.caffe.caffemodel import _Wire
from ..frontends.caffe.net import layer_included
from ..frontends.caffe.layers import layer_type
from ..frontends.caffe.prototxt import Message, load_prototxt
from ..frontends.caffe.transform import Transform, window_input
from ..ir.errors import GraphrtError, ParseError, UnsupportedError
from .base import ImageSource

DATA_TYPES = ("Data", "ImageData", "HDF5Data")
_ENVS: dict = {}  # real path -> the process's open LMDB environment
_ENVS_LOCK = threading.Lock()


def decode_image(data: bytes, color: bool | None = None, size: tuple | None = None, *,
                 bgr: bool = True) -> np.ndarray:
    """An encoded image as (C, H, W) uint8 in BGR order (Caffe's, OpenCV's; ``bgr=False``: RGB,
    MXNet's) (``color`` None keeps the file's own channels; True/False force 3 or 1); ``size``
    (h, w) resizes bilinearly first. A read-only view of Pillow's bytes (copied into a batch)."""
    from PIL import Image

    try:
        return _decode_image(Image, data, color, size, bgr)
    except (OSError, ValueError, Image.DecompressionBombError) as err:  # UnidentifiedImageError too
        raise ParseError(f"cannot decode an image of {len(data)} bytes: {err}") from None


def _decode_image(Image, data, color, size, bgr):
    with Image.open(io.BytesIO(data)) as im:
        if color is None:
            color = im.mode not in ("L", "LA", "I;16", "I", "1")  # grey stays one channel
        if im.mode != ("RGB" if color else "L"):
            im = im.convert("RGB" if color else "L")
        if size is not None and tuple(size) != (im.height, im.width):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        # Pillow packs the channels in the order asked for: no reversal, no copy until the batch
        a = np.frombuffer(im.tobytes("raw", ("BGR" if bgr else "RGB") if color else "L"), np.uint8)
        return a.reshape(im.height, im.width, 3).transpose(2, 0, 1) if color else \
            a.reshape(1, im.height, im.width)


def decode_datum(data: bytes, file: str | None = None) -> tuple[np.ndarray, int]:
    """One serialized ``Datum``: ((C, H, W) uint8 or float32, label)."""
    wire = _Wire(data, file)
    dims, raw, floats, label, encoded = [0, 0, 0], None, [], 0, False
    for field, kind, value, offset in wire.fields(0, len(data)):
        if field in (1, 2, 3) and kind == 0:
            dims[field - 1] = value
        elif field == 4 and kind == 2:
            raw = memoryview(data)[value[0]:value[1]]  # no copy: read straight into the batch
        elif field == 5 and kind == 0:
            label = value - (1 << 64) if value >= 1 << 63 else value
        elif field == 6:
            wire.numbers(floats, kind, value, 4, offset)
        elif field == 7 and kind == 0:
            encoded = bool(value)
    if encoded:
        return decode_image(raw), int(label)
    c, h, w = dims
    if raw:
        if len(raw) != c * h * w:
            raise ParseError(f"a Datum of {c}x{h}x{w} holds {len(raw)} bytes", file=file)
        return np.frombuffer(raw, np.uint8).reshape(c, h, w), int(label)
    values = wire.join(floats, "<f4")
    if values.size != c * h * w:
        raise ParseError(f"a Datum of {c}x{h}x{w} holds {values.size} float_data values", file=file)
    return values.reshape(c, h, w), int(label)


class LMDBSource(ImageSource):
    """The ``Datum`` records of an LMDB database, in key order (Caffe's ``Data`` layer)."""

    def __init__(self, path, **options):
        super().__init__(**options)
        self.path = str(path)
        self.store = f"the LMDB source {self.path!r}"

    def _open(self) -> int:
        try:
            import lmdb
        except ImportError:
            raise self.error("reading LMDB needs the lmdb package: pip install lmdb",
                             UnsupportedError) from None
        if not Path(self.path).exists():
            raise self.error(f"the LMDB source {self.path!r} does not exist (paths resolve from the "
                             f"working directory, {Path.cwd()})")
        real = os.path.realpath(self.path)
        with _ENVS_LOCK:  # LMDB opens an environment once per process: the sources share it
            if real not in _ENVS:
                _ENVS[real] = self._environment(lmdb)
        self._begin(_ENVS[real])
        self._keys = [k for k in self._txn.cursor().iternext(keys=True, values=False)]
        if not self._keys:
            raise self.error(f"the LMDB source {self.path!r} holds no records")
        return len(self._keys)

    def _environment(self, lmdb):
        try:
            return lmdb.open(self.path, readonly=True, lock=False, readahead=False,
                             subdir=Path(self.path).is_dir(), max_readers=512)
        except lmdb.Error as err:
            raise self.error(f"cannot open the LMDB source {self.path!r}: {err}") from None

    def _begin(self, env) -> None:
        self._env, self._lock, self._txn = env, threading.Lock(), env.begin(buffers=False)

    def _reopen(self) -> None:
        """A forked worker may not use the parent's environment (LMDB's rule): it closes its
        inherited copy (the parent's stays open) and opens its own, single-threaded."""
        import lmdb

        real = os.path.realpath(self.path)
        _ENVS.pop(real).close()
        _ENVS[real] = self._environment(lmdb)
        self._begin(_ENVS[real])

    def _raw(self, i: int) -> bytes:
        with self._lock:  # one read transaction; two iterations may read it from two threads
            return self._txn.get(self._keys[i])

    def _decode(self, raw):
        return decode_datum(raw, self.path)


class ImageListSource(ImageSource):
    """Caffe's ``ImageData``: lines ``path label`` of a list file, images read from ``root_folder``
    + path, resized to ``new_height`` x ``new_width`` when both are set."""

    def __init__(self, path, root_folder: str = "", size=None, color: bool = True, **options):
        super().__init__(**options)
        self.path, self.root, self.size, self.color = str(path), root_folder, size, color
        self.store = f"the image list {self.path!r}"

    def _open(self) -> int:
        if not Path(self.path).is_file():
            raise self.error(f"the image list {self.path!r} does not exist (paths resolve from the "
                             f"working directory, {Path.cwd()})")
        self._items = []
        for n, line in enumerate(Path(self.path).read_text().splitlines(), 1):
            if line.strip():
                name, _, label = line.strip().rpartition(" ")
                try:
                    self._items.append((name, int(label)))
                except ValueError:
                    raise self.error(f"line {n} of {self.path!r} is not 'path label': {line!r}",
                                     ParseError) from None
        if not self._items:
            raise self.error(f"the image list {self.path!r} is empty")
        return len(self._items)

    def _raw(self, i: int):
        return self._items[i]

    def _decode(self, item):
        name, label = item
        path = self.root + name
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise self.error(f"cannot read image {path!r} listed in {self.path!r}: {err}") from None
        return decode_image(data, self.color, self.size), label


class HDF5Source:
    """Caffe's ``HDF5Data``: a text file listing HDF5 files; each batch holds the rows of the
    datasets named by the layer's tops (float32, labels as int64), read in order across files."""

    def __init__(self, path, tops, *, batch_size: int, shuffle: bool = False, seed: int = 0,
                 repeat: bool = False, where: dict | None = None):
        self.path, self.tops, self.batch_size = str(path), list(tops), int(batch_size)
        self.shuffle, self.seed, self.repeat, self.where = shuffle, seed, repeat, where or {}

    def _arrays(self) -> list[dict]:
        import h5py

        if not Path(self.path).is_file():
            raise GraphrtError(f"the HDF5 file list {self.path!r} does not exist", **self.where)
        out = []
        for name in Path(self.path).read_text().split():
            if not Path(name).is_file():
                raise GraphrtError(f"HDF5 file {name!r} listed in {self.path!r} does not exist",
                                   **self.where)
            with h5py.File(name, "r") as f:
                missing = [t for t in self.tops if t not in f]
                if missing:
                    raise GraphrtError(f"HDF5 file {name!r} has no dataset {missing[0]!r}", **self.where)
                out.append({t: np.asarray(f[t]) for t in self.tops})
        return out

    def first(self):
        """The first row of the data and its label."""
        batch = next(iter(self))
        return batch[self.tops[0]][0], batch[self.tops[1]][0] if len(self.tops) > 1 else None

    def __iter__(self):
        arrays = self._arrays()
        joined = {t: np.concatenate([a[t] for a in arrays]) for t in self.tops}
        count = len(joined[self.tops[0]])
        rng = np.random.default_rng(self.seed)
        while True:
            order = rng.permutation(count) if self.shuffle else np.arange(count)
            for start in range(0, count, self.batch_size):
                idx = order[start:start + self.batch_size]
                yield {t: (joined[t][idx].astype(np.int64) if i else joined[t][idx].astype(np.float32))
                       for i, t in enumerate(self.tops)}
            if not self.repeat:
                return


def net_sources(path, phase: str = "TRAIN", stage=(), *, workers: int | None = None, seed: int = 0,
                repeat: bool = False, batch_size: int | None = None) -> list:
    """A source per data layer of ``path`` that ``phase`` (and ``stage``) include, named after the
    inputs of ``graphrt.load(path, phase=phase, feed="uint8")``. Nothing is opened here."""
    file = str(path)
    net = load_prototxt(path)
    stages = (stage,) if isinstance(stage, str) else tuple(stage)
    out = []
    for layer in net.getall("layer"):
        ltype = layer_type(layer)
        if ltype not in DATA_TYPES or not layer_included(layer, phase.upper(), stages):
            continue
        out.append(layer_source(layer, ltype, file, phase.upper(), workers=workers, seed=seed,
                                repeat=repeat, batch_size=batch_size))
    return out


def layer_source(layer: Message, ltype: str, file: str, phase: str, **options):
    name, tops = layer.get("name"), layer.getall("top")
    where = {"node": name, "op": ltype, "file": file, "line": layer.line}
    batch_size = options.pop("batch_size", None)
    names = (tops[0], window_input(layer), tops[1] if len(tops) > 1 else None)
    if ltype == "Data":
        p = layer.get("data_param") or Message()
        backend = p.get("backend", "LEVELDB")
        if backend != "LMDB":
            raise UnsupportedError(f"layer {name!r}: backend {backend} (LevelDB, Caffe's default) has "
                                   "no maintained Python binding; convert the database to LMDB "
                                   "(caffe's convert_imageset --backend=lmdb)", **where)
        _need(p, "source", name, file, layer)
        return LMDBSource(p.get("source"), batch_size=batch_size or int(p.get("batch_size", 1)),
                          names=names, transform=Transform.from_layer(layer, phase, file),
                          where=where, **options)
    if ltype == "ImageData":
        p = layer.get("image_data_param") or Message()
        _need(p, "source", name, file, layer)
        h, w = int(p.get("new_height", 0)), int(p.get("new_width", 0))
        return ImageListSource(p.get("source"), root_folder=p.get("root_folder", ""),
                               size=(h, w) if h and w else None, color=bool(p.get("is_color", True)),
                               batch_size=batch_size or int(p.get("batch_size", 1)), names=names,
                               transform=Transform.from_layer(layer, phase, file),
                               shuffle=bool(p.get("shuffle", False)), where=where, **options)
    p = layer.get("hdf5_data_param") or Message()
    _need(p, "source", name, file, layer)
    options.pop("workers", None)
    return HDF5Source(p.get("source"), tops, batch_size=batch_size or int(p.get("batch_size", 1)),
                      shuffle=bool(p.get("shuffle", False)), where=where, **options)


def _need(p: Message, field: str, name: str, file: str, layer: Message) -> None:
    if p.get(field) is None:
        raise ParseError(f"data layer {name!r} has no {field}", file=file, line=layer.line, node=name)


def load_fed(path, source, phase: str = "TRAIN", stage=(), **options):
    """``graphrt.load(path)`` for ``source``'s batches: the data blob shaped by the first record
    (as Caffe shapes it) and fed as stored (uint8, or float32 for ``float_data`` records), the
    transform on the device. Opens the source (reads one record)."""
    from ..frontends.loading import load

    image, _ = source.first()
    feed = "uint8" if image.dtype == np.uint8 else "stored-float32"
    return load(path, phase=phase, stage=stage, input_shape=image.shape, feed=feed, **options)
