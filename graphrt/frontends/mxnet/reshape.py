"""MXNet's ``Reshape`` shape rule, over shapes whose batch dimension is ``None``.

The target may hold MXNet's special values besides positive sizes: ``0`` copies the input
dimension, ``-1`` is inferred from the others, ``-2`` copies all remaining input dimensions,
``-3`` merges two input dimensions into one and ``-4`` splits one input dimension into the two
sizes that follow it (one of them may be -1)::

    mxnet_reshape((None, 6, 4), (0, -1))          # (None, 24)
    mxnet_reshape((None, 6, 4), (0, -4, 2, -1, 4))  # (None, 2, 3, 4)

The batch (``None``) must come out as the one ``None`` of the result: copied by ``0``/``-2``, or
stood for by a ``-1`` when the other sizes account for every value of an item.
"""
from __future__ import annotations

import math


def mxnet_reshape(src: tuple, target: tuple, reverse: bool = False) -> tuple:
    """MXNet's Reshape shape rule (0 copy, -1 infer, -2 copy rest, -3 merge two, -4 split one).

    ``src`` holds None for the batch, which must come out as the one None of the result (copied by
    0/-2, or inferred by a -1 when the other sizes account for every value of an item). Raises
    ValueError with the reason when the target does not fit.
    """
    if reverse:
        if any(d in (-3, -4) for d in target):
            raise ValueError("reverse=True with -3/-4 is not supported")
        return tuple(reversed(mxnet_reshape(tuple(reversed(src)), tuple(reversed(target)))))
    return _infer_unknown(src, _expand(src, list(target)))


def _expand(src: tuple, t: list) -> list:
    """The target with every special value but -1 replaced by the sizes it stands for."""
    out: list = []
    i = k = 0  # i: next input dimension, k: next target item
    while k < len(t):
        d = t[k]
        if d > 0:
            out.append(d)
            i += 1
        elif d == 0:
            if i >= len(src):
                raise ValueError(f"0 at position {k} has no input dimension to copy")
            out.append(src[i])
            i += 1
        elif d == -1:
            out.append(-1)
            i += 1
        elif d == -2:
            out.extend(src[i:])
            i = len(src)
        elif d == -3:
            if i + 1 >= len(src):
                raise ValueError("-3 needs two input dimensions to merge")
            if src[i] is None or src[i + 1] is None:
                raise ValueError("-3 would merge the batch dimension into another")
            out.append(src[i] * src[i + 1])
            i += 2
        elif d == -4:
            if k + 2 >= len(t) or i >= len(src):
                raise ValueError("-4 needs an input dimension and two sizes after it")
            out.extend(_split(src[i], t[k + 1], t[k + 2]))
            i += 1
            k += 2
        else:
            raise ValueError(f"invalid size {d} in the target shape")
        k += 1
    return out


def _split(whole: int | None, first: int, second: int) -> tuple[int, int]:
    """The two sizes a -4 splits ``whole`` into (one of ``first``/``second`` may be -1)."""
    if whole is None:
        raise ValueError("-4 would split the batch dimension")
    a, b = first, second
    if a == -1 and b > 0:
        a = whole // b
    elif b == -1 and a > 0:
        b = whole // a
    if a <= 0 or b <= 0 or a * b != whole:
        raise ValueError(f"-4 cannot split {whole} into {first} x {second}")
    return a, b


def _infer_unknown(src: tuple, out: list) -> tuple:
    """Resolve the -1 of an expanded target (a size, or the batch) and check the value count."""
    if out.count(-1) > 1:
        raise ValueError("more than one -1 in the target shape")
    total = math.prod(d for d in src if d is not None)
    known = math.prod(d for d in out if d is not None and d != -1)
    if -1 in out:
        if None in out or None not in src:  # -1 is an ordinary inferred size
            if known == 0 or total % known:
                raise ValueError(f"cannot infer -1: {total} values per item, {known} known")
            out[out.index(-1)] = total // known
        elif known == total:  # the -1 stands for the batch
            out[out.index(-1)] = None
        else:
            raise ValueError("the -1 would mix the batch with other dimensions")
    if None in src and out.count(None) != 1:
        raise ValueError("the target shape must keep the batch dimension")
    if math.prod(d for d in out if d is not None) != total:
        raise ValueError(f"{total} values per item cannot become {tuple(out)}")
    return tuple(out)
