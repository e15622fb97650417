"""The layers of a Keras model config, and how they connect.

:func:`read_entries` turns the config's ``layers`` list into :class:`LayerEntry` records (class,
name, keyword config, line in the file); :func:`functional_io` and :func:`sequential_io` find
each layer's inputs (a functional model's ``inbound_nodes``, or the previous layer of a
Sequential), order the layers so producers come first, and name the model's inputs and outputs.
Nothing is built here: :mod:`graphrt.frontends.keras.assembler` turns the entries into a graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ...ir.errors import GraphError, ParseError, UnsupportedError

#: The model classes graphrt reads (``Model`` is Keras 2's name of ``Functional``).
MODEL_CLASSES = ("Sequential", "Functional", "Model")
#: The config keys that state a layer's input shape.
INPUT_SHAPE_KEYS = ("batch_shape", "batch_input_shape", "shape", "input_shape")


@dataclass
class LayerEntry:
    """One layer of the config, before building."""

    index: int
    cls: str
    name: str
    config: dict
    line: int | None
    inbound: list[str] = field(default_factory=list)  # producing layer names, in argument order
    constants: list = field(default_factory=list)  # (argument position, number) of an op node
    module: str = ""  # "keras.layers", or "keras.src.ops...." for an operation node

def read_entries(raw_layers: list, file: str | None, lines: Mapping[str, int],
                 functional: bool) -> list[LayerEntry]:
    """The config's ``layers`` list as entries (with their inputs when ``functional``).

    A ParseError names a malformed layer or two layers of one name.
    """
    entries = [_entry(raw, i, file, lines, functional) for i, raw in enumerate(raw_layers)]
    seen: dict[str, LayerEntry] = {}
    for e in entries:
        if e.name in seen:
            raise ParseError(f"two layers are named {e.name!r} (layers #{seen[e.name].index} and "
                             f"#{e.index})", node=e.name, op=e.cls, file=file, line=e.line)
        seen[e.name] = e
    return entries


def _entry(raw: Any, index: int, file: str | None, lines: Mapping[str, int],
           functional: bool) -> LayerEntry:
    """One entry of the ``layers`` list; a ParseError names what it lacks."""
    where = f"layer #{index}"
    if not isinstance(raw, Mapping):
        raise ParseError(f"{where} is not an object", file=file)
    cls = raw.get("class_name")
    cfg = raw.get("config")
    lname = cfg.get("name") if isinstance(cfg, Mapping) else None
    lname = lname if isinstance(lname, str) and lname else raw.get("name")
    if isinstance(lname, str) and lname:
        where = f"layer {lname!r}"
    if not isinstance(cls, str):
        raise ParseError(f"{where} has no 'class_name'", node=lname, file=file,
                         line=lines.get(lname))
    if not isinstance(cfg, Mapping):
        raise ParseError(f"{where} ({cls}) has no 'config' object", node=lname, op=cls, file=file,
                         line=lines.get(lname))
    if not isinstance(lname, str) or not lname:
        raise ParseError(f"{where} ({cls}) has no 'name'", op=cls, file=file)
    e = LayerEntry(index, cls, lname, dict(cfg), lines.get(lname),
                   module=str(raw.get("module") or ""))
    if functional:
        e.inbound = _inbound(raw, e, file)
    return e


def _history(value: Any, e: LayerEntry, file: str | None) -> str:
    """The producing layer of one ``[layer, node_index, tensor_index, ...]`` reference."""
    if (not isinstance(value, (list, tuple)) or len(value) < 3 or not isinstance(value[0], str)
            or not all(isinstance(v, int) for v in value[1:3])):
        raise ParseError(f"bad tensor reference {value!r} in the inputs of layer {e.name!r}; "
                         "expected [layer, node_index, tensor_index]", node=e.name, op=e.cls,
                         file=file, line=e.line)
    if value[1] != 0 or value[2] != 0:
        raise UnsupportedError(f"layer {e.name!r} reads output {value[2]} of call {value[1]} of "
                               f"layer {value[0]!r}; graphrt supports layers called once with one "
                               "output", node=e.name, op=e.cls, file=file, line=e.line)
    return value[0]


def _keras3_refs(value: Any, e: LayerEntry, file: str | None, out: list[str]) -> None:
    """Append the producers of the ``__keras_tensor__`` references anywhere in ``value``."""
    if isinstance(value, Mapping):
        if value.get("class_name") == "__keras_tensor__":
            cfg = value.get("config")
            history = cfg.get("keras_history") if isinstance(cfg, Mapping) else None
            out.append(_history(history, e, file))
        else:
            for v in value.values():
                _keras3_refs(v, e, file, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _keras3_refs(v, e, file, out)


def _inbound(raw: Mapping, e: LayerEntry, file: str | None) -> list[str]:
    """The producing layers of a functional model's layer, from its one ``inbound_nodes`` call."""
    nodes = raw.get("inbound_nodes")
    if nodes is None:
        raise ParseError(f"layer {e.name!r} of a functional model has no 'inbound_nodes'",
                         node=e.name, op=e.cls, file=file, line=e.line)
    if not isinstance(nodes, list):
        raise ParseError(f"layer {e.name!r}: 'inbound_nodes' must be a list", node=e.name,
                         op=e.cls, file=file, line=e.line)
    if not nodes:
        return []
    if len(nodes) > 1:
        raise UnsupportedError(f"layer {e.name!r} is called {len(nodes)} times (a shared layer); "
                               "graphrt supports layers called once", node=e.name, op=e.cls,
                               file=file, line=e.line)
    node = nodes[0]
    refs: list[str] = []
    if isinstance(node, Mapping):  # Keras 3
        _keras3_refs(node.get("args", []), e, file, refs)
        args = node.get("args", [])
        e.constants = [(i, float(a)) for i, a in enumerate(args if isinstance(args, list) else [])
                       if isinstance(a, (int, float)) and not isinstance(a, bool)]
        kw: list[str] = []
        _keras3_refs(node.get("kwargs", {}), e, file, kw)
        if kw:
            raise UnsupportedError(f"layer {e.name!r} takes tensors as keyword arguments "
                                   f"({', '.join(kw)}); graphrt supports positional inputs only",
                                   node=e.name, op=e.cls, file=file, line=e.line)
    elif isinstance(node, list):  # Keras 2: [[layer, node_index, tensor_index, kwargs], ...]
        refs = [_history(ref, e, file) for ref in node]
    else:
        raise ParseError(f"layer {e.name!r}: cannot read inbound node {node!r}", node=e.name,
                         op=e.cls, file=file, line=e.line)
    if not refs:
        raise ParseError(f"layer {e.name!r} has an inbound node without input tensors",
                         node=e.name, op=e.cls, file=file, line=e.line)
    return refs


def _io_refs(value: Any, what: str, file: str | None) -> list[str]:
    """Layer names of ``input_layers`` / ``output_layers`` (one reference, a list or a dict)."""
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list) and value and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ParseError(f"functional config has no usable {what!r}", file=file)
    names = []
    for ref in value:
        if not (isinstance(ref, (list, tuple)) and len(ref) >= 3 and isinstance(ref[0], str)):
            raise ParseError(f"bad entry {ref!r} in {what!r}; expected [layer, node_index, "
                             "tensor_index]", file=file)
        if ref[1] != 0 or ref[2] != 0:
            raise UnsupportedError(f"{what} entry {ref!r}: graphrt supports layers called once "
                                   "with one output", file=file)
        names.append(ref[0])
    return names


def functional_io(cfg: Mapping, entries: list[LayerEntry],
                  file: str | None) -> tuple[list[str], list[str]]:
    """The input and output layer names of a functional model; sorts ``entries`` producers first.

    Every ``inbound`` reference must name a layer of the config, and every layer without inputs
    must be one of the model's inputs.
    """
    by_name = {e.name: e for e in entries}
    for e in entries:
        for src in e.inbound:
            if src not in by_name:
                raise ParseError(f"layer {e.name!r} reads layer {src!r}, which is not in the "
                                 "config", node=e.name, op=e.cls, file=file, line=e.line)
    if "output_layers" not in cfg:
        raise ParseError("functional config has no 'output_layers'", file=file)
    outputs = _io_refs(cfg["output_layers"], "output_layers", file)
    if "input_layers" in cfg:
        inputs = _io_refs(cfg["input_layers"], "input_layers", file)
    else:
        inputs = [e.name for e in entries if e.cls == "InputLayer"]
    for lname in inputs + outputs:
        if lname not in by_name:
            raise ParseError(f"model input/output {lname!r} is not a layer of the config",
                             file=file)
    for lname in inputs:
        if by_name[lname].cls != "InputLayer":
            raise UnsupportedError(f"model input {lname!r} is a {by_name[lname].cls}, not an "
                                   "InputLayer", node=lname, file=file)
    for e in entries:
        if not e.inbound and e.name not in inputs:
            what = ("an InputLayer that is not among the model's 'input_layers'"
                    if e.cls == "InputLayer" else "a layer without inputs")
            raise ParseError(f"layer {e.name!r} is {what}", node=e.name, op=e.cls, file=file,
                             line=e.line)
    _topo_sort(entries, file)
    return inputs, outputs


def _topo_sort(entries: list[LayerEntry], file: str | None) -> None:
    """Order ``entries`` so producers come first (config order among ready layers).

    In rounds: a round takes every layer whose producers earlier rounds took, in config order."""
    position = {e.name: i for i, e in enumerate(entries)}
    waiting = {e.name: len(set(e.inbound)) for e in entries}  # producers not taken yet
    readers: dict[str, list[LayerEntry]] = {}
    for e in entries:
        for s in set(e.inbound):
            readers.setdefault(s, []).append(e)
    order: list[LayerEntry] = []
    ready = [e for e in entries if not waiting[e.name]]
    while ready:
        ready.sort(key=lambda e: position[e.name])
        order += ready
        following = []
        for e in ready:
            for r in readers.get(e.name, ()):
                waiting[r.name] -= 1
                if not waiting[r.name]:
                    following.append(r)
        ready = following
    if len(order) < len(entries):
        done = {e.name for e in order}
        pending = [e for e in entries if e.name not in done]
        e = pending[0]
        raise GraphError("the layers form a cycle through " + ", ".join(
            repr(p.name) for p in pending), node=e.name, op=e.cls, file=file, line=e.line)
    entries[:] = order


def sequential_io(doc: Mapping, cfg: Mapping, entries: list[LayerEntry],
                  file: str | None) -> tuple[list[str], list[str]]:
    """The input and output layer names of a Sequential model; chains ``entries``.

    A Keras 2 config without an InputLayer gets one (``input_layer``, or ``input_1`` / ``input``
    if that name is taken) from the shape its first layer or the model's build config states.
    """
    first = entries[0]
    for e in entries[1:]:
        if e.cls == "InputLayer":
            raise ParseError(f"InputLayer {e.name!r} must be the first layer of a Sequential model",
                             node=e.name, op=e.cls, file=file, line=e.line)
    if first.cls != "InputLayer":  # Keras 2 style: the first layer states the input shape
        shape = _stated_input_shape(doc, cfg, first, file)
        for k in INPUT_SHAPE_KEYS + ("input_dim",):
            first.config.pop(k, None)
        names = {e.name for e in entries}
        in_name = next(n for n in ("input_layer", "input_1", "input") if n not in names)
        entries.insert(0, LayerEntry(-1, "InputLayer", in_name,
                                     {"name": in_name, "batch_shape": list(shape)}, first.line))
    for prev, e in zip(entries, entries[1:]):
        e.inbound = [prev.name]
    return [entries[0].name], [entries[-1].name]


def _stated_input_shape(doc: Mapping, cfg: Mapping, first: LayerEntry, file: str | None) -> list:
    """The batch input shape a Sequential config without an InputLayer states."""
    c = first.config
    if c.get("batch_shape") is not None or c.get("batch_input_shape") is not None:
        shape = c.get("batch_shape", c.get("batch_input_shape"))
    elif c.get("input_shape") is not None or c.get("shape") is not None:
        shape = c.get("input_shape", c.get("shape"))
        shape = [None, *shape] if isinstance(shape, (list, tuple)) else shape
    elif c.get("input_dim") is not None:
        shape = [None, c["input_dim"]]
    else:
        shape = cfg.get("build_input_shape")
        if shape is None and isinstance(doc.get("build_config"), Mapping):
            shape = doc["build_config"].get("input_shape")
    if not isinstance(shape, (list, tuple)) or not shape:
        raise ParseError("the Sequential config has no InputLayer and no input shape "
                         "(batch_input_shape / build_input_shape)", node=first.name,
                         op=first.cls, file=file, line=first.line)
    return shape


__all__ = ["LayerEntry", "MODEL_CLASSES", "INPUT_SHAPE_KEYS", "read_entries", "functional_io",
           "sequential_io"]
