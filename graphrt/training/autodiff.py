"""Autodiff: turn an inference graph into one training-step graph.

Training is not a second code path. :func:`training_graph` takes a graph whose outputs include a
scalar loss and returns a graph that, run once, performs a whole SGD step:

1. **Training forms.** ``dropout`` becomes ``dropout_train`` (a seeded mask, kept for the backward)
   and ``batch_norm`` with running statistics becomes ``batch_norm_train`` (batch statistics, the
   running averages updated in place under the source framework's convention).
2. **Backward.** Walking the nodes in reverse topological order, each op's VJP rule
   (``OpDef.backward``) appends the nodes computing its inputs' gradients; a tensor read by several
   nodes gets the sum of their contributions. Only tensors that depend on a trainable parameter get
   gradients.
3. **Updates.** Each trainable parameter gets an ``sgd_update`` node (momentum, weight decay, its
   ``lr_mult``/``decay_mult``, the learning-rate policy) that runs *after* every other reader of the
   parameter — and as soon as that and its gradient allow (its schedule position is moved there),
   so a layer's gradient is dead, its arena range reusable, once its update ran rather than at the
   end of the backward — and a ``step_counter`` advances the device-resident iteration counter last.

The result goes through the same passes, the same memory plan (gradients and activations share the
arena by liveness) and the same scheduler as inference.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..ir.errors import GraphrtError, UnsupportedError
from ..ir import Graph, Node
from ..ops import get_op

ITERATION = "__iteration__"
ONE = "__one__"


@dataclasses.dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent with momentum and weight decay, and Caffe's lr policies.

    ``convention`` is where the rate enters the momentum (see :mod:`graphrt.ops.optim`):
    ``"pytorch"`` (``torch.optim.SGD``, the default) or ``"caffe"`` (Caffe's SGDSolver, Keras'
    SGD); they differ only once a policy changes the rate.

    >>> opt = SGD(lr=0.01, momentum=0.9, weight_decay=5e-4, policy="step", gamma=0.1, stepsize=1000,
    ...           convention="caffe")
    """

    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    policy: str = "fixed"
    gamma: float = 0.1
    power: float = 1.0
    stepsize: int = 0
    stepvalues: tuple = ()
    max_iter: int = 0
    convention: str = "pytorch"

    def attrs(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class GradContext:
    """What a backward rule sees: ``add`` nodes, ``spec`` of tensors, ``wants`` an input's gradient,
    ``state`` parameters (see ``OpDef.backward``)."""

    def __init__(self, graph: Graph, node: Node, wanted: list[bool]):
        self.graph, self.node, self._wanted = graph, node, wanted

    def add(self, op: str, inputs, attrs=None):
        name = self.graph.unique_name(f"{self.node.name}/grad/{op}")
        return self.graph.add_node(op, list(inputs), name=name, attrs=attrs, source=self.node.source)

    def spec(self, tensor: str):
        return self.graph.specs[tensor]

    def wants(self, index: int) -> bool:
        return self._wanted[index]

    def state(self, base: str, value) -> str:
        name = base if base not in self.graph.specs else self.graph.unique_name(base)
        return self.graph.add_param(name, np.asarray(value), trainable=False)


# ---- 1. training forms --------------------------------------------------------------------------
def to_training_forms(graph: Graph, seed: int = 0) -> Graph:
    """Dropout with a seeded mask and batch norm with batch statistics (see the module docstring)."""
    g = graph.copy()
    for i, node in enumerate(g.nodes):
        if node.op == "dropout" and node.attrs["rate"] > 0:
            counter = g.add_param(f"{node.name}/counter", np.zeros((), np.int64), trainable=False)
            new = node.replace(op="dropout_train", inputs=node.inputs + (counter,),
                               outputs=node.outputs + (f"{node.name}:mask",),
                               attrs={"rate": node.attrs["rate"], "seed": seed * 1000003 + i})
            g.splice([node.name], [new])
        elif node.op == "batch_norm" and _has_running_stats(g, node):
            g.splice([node.name], [_batch_norm_train(g, node)])
    return g


def _has_running_stats(g: Graph, node: Node) -> bool:
    return all(t in g.params for t in node.inputs[1:3])


def _batch_norm_train(g: Graph, node: Node) -> Node:
    x, mean, var = node.inputs[:3]
    c = g.specs[x].shape[1]
    dtype = g.params[mean].dtype  # the state's own precision (a float64 model keeps float64 sums)
    if len(node.inputs) == 5:
        gamma, beta = node.inputs[3:]
    else:
        gamma = g.add_param(f"{node.name}/gamma_one", np.ones(c, dtype), trainable=False)
        beta = g.add_param(f"{node.name}/beta_zero", np.zeros(c, dtype), trainable=False)
    for stat in (mean, var):
        g.param_info[stat].trainable = False
    attrs = {k: node.attrs[k] for k in ("eps", "momentum", "unbiased", "caffe_fraction")
             if k in node.attrs}
    inputs = [x, gamma, beta, mean, var]
    if attrs.get("caffe_fraction"):
        # Caffe's scale factor S starts at 0 in a fresh net: the first batch's statistics replace
        # the (zero) running sums outright; a loaded caffemodel's blobs are already divided by S
        inputs.append(g.add_param(f"{node.name}/scale_factor", np.zeros(1, dtype), trainable=False))
    outputs = node.outputs + (f"{node.name}:saved_mean", f"{node.name}:saved_invstd")
    return node.replace(op="batch_norm_train", inputs=tuple(inputs), outputs=outputs, attrs=attrs)


# ---- 2. backward --------------------------------------------------------------------------------
def trainable_params(graph: Graph) -> list[str]:
    return [p for p, info in graph.param_info.items()
            if info.trainable and np.issubdtype(graph.params[p].dtype, np.floating)]


def _depends_on(graph: Graph, sources: set[str]) -> set[str]:
    """Tensors whose value depends on one of ``sources`` (float tensors only)."""
    reached = set(sources)
    for node in graph.nodes:
        if any(t in reached for t in node.inputs):
            reached.update(t for t in node.outputs if graph.specs[t].dtype.startswith("float"))
    return reached


def gradients(graph: Graph, loss: str, wrt: list[str]) -> dict[str, str]:
    """Append the backward of ``loss`` to ``graph`` (in place); return param -> gradient tensor."""
    if graph.specs[loss].shape != ():
        raise GraphrtError(f"the loss {loss!r} must be a scalar, got shape {graph.specs[loss]}")
    needed = _depends_on(graph, set(wrt))
    if loss not in needed:
        raise GraphrtError(f"the loss {loss!r} does not depend on any trainable parameter")
    if ONE not in graph.params:
        graph.add_param(ONE, np.ones((), graph.specs[loss].dtype), trainable=False)
    contributions: dict[str, list[str]] = {loss: [ONE]}
    for node in reversed(graph.nodes):
        dys = [_total(graph, contributions.get(t)) for t in node.outputs]
        if all(d is None for d in dys):
            continue
        wanted = [t in needed for t in node.inputs]
        if not any(wanted):
            continue
        rule = get_op(node.op).backward
        if rule is None:
            raise UnsupportedError(f"op {node.op!r} has no backward rule", node=node.name, op=node.op)
        dxs = rule(GradContext(graph, node, wanted), node, dys)
        for t, dx, want in zip(node.inputs, dxs, wanted):
            if dx is not None and want:
                contributions.setdefault(t, []).append(dx)
    return {p: _total(graph, contributions.get(p)) for p in wrt if contributions.get(p)}


def _total(graph: Graph, parts: list[str] | None) -> str | None:
    if not parts:
        return None
    if len(parts) > 1:
        parts[:] = [graph.add_node("add", parts, name=graph.unique_name("grad_sum"))]
    return parts[0]


# ---- 3. updates ---------------------------------------------------------------------------------
def add_updates(graph: Graph, grads: dict[str, str], optimizer: SGD) -> None:
    """An ``sgd_update`` per parameter after all its readers, then the step counter."""
    if ITERATION not in graph.params:
        graph.add_param(ITERATION, np.zeros((), np.float64), trainable=False)
    op = getattr(optimizer, "op", "sgd_update")  # another optimizer names its op and state count
    for p, grad in grads.items():
        info = graph.param_info[p]
        states = [graph.add_param(f"{p}/velocity" if k == 0 else f"{p}/history{k + 1}",
                                  np.zeros_like(graph.params[p]), trainable=False)
                  for k in range(getattr(optimizer, "states", 1))]
        readers = tuple(n.name for n in graph.consumers(p))
        attrs = dict(optimizer.attrs(), lr_mult=info.lr_mult, decay_mult=info.decay_mult)
        name = graph.unique_name(f"{p}/update")
        graph.add_node(op, [p, grad, *states, ITERATION], name=name, attrs=attrs)
        _set_after(graph, name, readers)
        # run the update as soon as it can (right after the gradient and the parameter's last
        # reader), not after the whole backward: the gradient's arena range is free from there on
        anchors = [n for n in (graph.producer(grad),) if n is not None]
        graph.schedule_after(name, [n.name for n in anchors] + list(readers))
    readers = tuple(n.name for n in graph.consumers(ITERATION))
    graph.add_node("step_counter", [ITERATION], name="step_counter")
    _set_after(graph, "step_counter", readers)


def _set_after(graph: Graph, name: str, after: tuple) -> None:
    node = graph.node(name)
    graph.replace_node(name, node.replace(after=tuple(a for a in after if a != name)))


def training_graph(graph: Graph, loss: str, optimizer: SGD, *, seed: int = 0, training_forms=None,
                   reduce_gradients=None) -> tuple[Graph, list[str]]:
    """The one-step training graph of ``graph`` minimizing the scalar output ``loss``; returns the
    graph and the trained parameters' names. Its outputs are the graph's scalar outputs (loss,
    accuracy). Data-parallel training (``graphrt.distributed``) hooks in twice:
    ``training_forms(graph) -> graph`` may change the training forms before the backward
    (synchronized batch norm) and ``reduce_gradients(graph, {param: gradient}) -> {param:
    gradient}`` may append nodes between the gradients and the updates (the all-reduce)."""
    g = to_training_forms(graph, seed)
    if training_forms is not None:
        g = training_forms(g)
    params = trainable_params(g)
    grads = gradients(g, loss, params)
    if reduce_gradients is not None:
        grads = reduce_gradients(g, grads)
    add_updates(g, grads, optimizer)
    g.set_outputs([t for t in g.outputs if g.specs[t].shape == ()])
    g.name = f"{graph.name}/train"
    return g, list(grads)
