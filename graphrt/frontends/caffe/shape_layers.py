"""Caffe's layers that move data: Slice, Crop, Reshape (with ``axis``/``num_axes``), Flatten (with
``end_axis``), Tile, Silence, and the SSD fork's Permute.

Shapes follow BVLC's layer code; the batch axis (Caffe's axis 0) is the graph's symbolic batch and
stays first.
"""
from __future__ import annotations

import math

from ...ir.errors import AttrError, GraphrtError, UnsupportedError
from .layers import _node
from .prototxt import Message


def _shape(b, x):
    return b.graph.specs[x].shape


def _axis(axis, rank, what):
    if not -rank <= axis < rank:
        raise AttrError(f"{what} axis {axis} is out of range for a {rank}-D bottom")
    return axis % rank


def slice_layer(b, layer, name, inputs):
    """Slice: the bottom cut along ``axis`` at ``slice_point`` s (or into equal parts)."""
    p = layer.get("slice_param", Message())
    x = inputs[0]
    xs = _shape(b, x)
    axis = _axis(p.get("slice_dim", p.get("axis", 1)), len(xs), "Slice")
    if axis == 0:
        raise UnsupportedError("Slice along the batch axis (axis 0)")
    tops, points = len(layer.getall("top")), list(p.getall("slice_point"))
    n = xs[axis]
    if points:
        if len(points) != tops - 1 or points != sorted(points) or points[-1] >= n or points[0] <= 0:
            raise AttrError(f"Slice points {points} do not cut axis {axis} of size {n} into "
                            f"{tops} parts")
        sizes = [hi - lo for lo, hi in zip([0] + points, points + [n])]
    else:
        if n % tops:
            raise AttrError(f"Slice: axis {axis} of size {n} does not split into {tops} equal parts")
        sizes = [n // tops] * tops
    if tops == 1:
        return _node(b, "identity", [x], layer, name)
    outs = _node(b, "split", [x], layer, name, {"axis": axis, "sizes": sizes})
    return list(outs)


def crop(b, layer, name, inputs):
    """Crop: bottom 0 cut to bottom 1's shape on the axes from ``axis`` (default 2), starting at
    ``offset`` (one value for every axis, or one per axis)."""
    if len(inputs) != 2:
        raise GraphrtError(f"Crop takes two bottoms, got {len(inputs)}")
    p = layer.get("crop_param", Message())
    xs, ref = _shape(b, inputs[0]), _shape(b, inputs[1])
    axis = _axis(p.get("axis", 2), len(xs), "Crop")
    if axis == 0 or len(ref) != len(xs):
        raise UnsupportedError("Crop needs bottoms of one rank, cropped from axis 1 on")
    offsets = list(p.getall("offset")) or [0]
    axes = list(range(axis, len(xs)))
    if len(offsets) == 1:
        offsets = offsets * len(axes)
    if len(offsets) != len(axes):
        raise AttrError(f"Crop has {len(offsets)} offsets for {len(axes)} cropped axes")
    for a, off in zip(axes, offsets):
        if off + ref[a] > xs[a]:
            raise AttrError(f"Crop: offset {off} + size {ref[a]} exceeds axis {a} of size {xs[a]}")
    b.consumed.add(inputs[1])  # the reference bottom gives its shape only
    return _node(b, "slice", [inputs[0]], layer, name, {
        "axes": axes, "starts": offsets, "ends": [o + ref[a] for a, o in zip(axes, offsets)]})


def reshape(b, layer, name, inputs):
    """Reshape: dims [axis, axis + num_axes) of the bottom replaced by ``shape`` (0 copies the
    bottom's dim, -1 is inferred)."""
    p = layer.get("reshape_param", Message())
    x = inputs[0]
    xs = list(_shape(b, x))
    rank = len(xs)
    axis = p.get("axis", 0)
    axis = axis + rank + 1 if axis < 0 else axis
    num_axes = p.get("num_axes", -1)
    end = rank if num_axes == -1 else axis + num_axes
    if not 0 <= axis <= end <= rank:
        raise AttrError(f"Reshape axis {p.get('axis', 0)} and num_axes {num_axes} do not fit a "
                        f"{rank}-D bottom")
    dims = list(p.get("shape", Message()).getall("dim"))
    new = [xs[axis + i] if d == 0 else d for i, d in enumerate(dims)]
    out = xs[:axis] + new + xs[end:]
    if not out or out[0] is not None:
        raise UnsupportedError("Reshape must keep the batch dimension (first dim 0)")
    rest = out[1:]
    if None in rest or sum(d == -1 for d in rest) > 1:
        raise AttrError(f"Reshape to {out} moves the batch or infers more than one dimension")
    return _node(b, "reshape", [x], layer, name, {"shape": rest})


def flatten(b, layer, name, inputs):
    """Flatten: axes ``axis`` .. ``end_axis`` (default 1 .. -1) merged into one."""
    p = layer.get("flatten_param", Message())
    xs = _shape(b, inputs[0])
    rank = len(xs)
    start, end = _axis(p.get("axis", 1), rank, "Flatten"), _axis(p.get("end_axis", -1), rank, "Flatten")
    if start == 0 or end < start:
        raise UnsupportedError(f"Flatten from axis {start} to {end} (the batch stays first)")
    merged = int(math.prod(xs[start:end + 1]))
    return _node(b, "reshape", inputs, layer, name,
                 {"shape": tuple(xs[1:start]) + (merged,) + tuple(xs[end + 1:])})


def tile(b, layer, name, inputs):
    p = layer.get("tile_param", Message())
    rank = len(_shape(b, inputs[0]))
    axis = _axis(p.get("axis", 1), rank, "Tile")
    tiles = p.get("tiles")
    if tiles is None or tiles < 1:
        raise AttrError("Tile needs tile_param.tiles >= 1")
    if axis == 0:
        raise UnsupportedError("Tile along the batch axis")
    reps = [1] * rank
    reps[axis] = tiles
    return _node(b, "tile", inputs, layer, name, {"repeats": reps})


def permute(b, layer, name, inputs):
    """The SSD fork's Permute: ``order`` (axes not listed follow in their order)."""
    rank = len(_shape(b, inputs[0]))
    order = list(layer.get("permute_param", Message()).getall("order"))
    perm = order + [a for a in range(rank) if a not in order]
    if sorted(perm) != list(range(rank)) or perm[0] != 0:
        raise AttrError(f"Permute order {order} is not a permutation of {rank} axes keeping the "
                        "batch first")
    return _node(b, "transpose", inputs, layer, name, {"perm": perm})


def silence(b, layer, name, inputs):
    """Silence: consumes its bottoms (they are not net outputs) and produces nothing."""
    return []


CONVERTERS = {"Slice": slice_layer, "Crop": crop, "Reshape": reshape, "Flatten": flatten,
              "Tile": tile, "Permute": permute, "Silence": silence}
MIN_BOTTOMS = {"Crop": 2}
