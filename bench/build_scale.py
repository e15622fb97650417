"""How long graphrt takes to load, verify, optimize and compile a very deep model.

    python bench/build_scale.py [--keras-layers 20000] [--caffe-layers 4000] [--repeats 3] [--markdown]

Generates, in a temporary directory that is removed afterwards, two synthetic models:

- a Keras 3 ``Sequential`` config (``model.to_json()`` layout, as in
  ``shared/fixtures/keras/seed_ann.json``): an ``InputLayer`` of width 8 followed by ``--keras-layers``
  layers alternating ``Dense(8)`` and ``Activation('relu')``;
- a Caffe prototxt: an ``Input`` layer of shape (1, 8) followed by ``--caffe-layers`` layers
  alternating ``InnerProduct(num_output: 8)`` and an in-place ``ReLU`` (Caffe's usual style).

Each model then goes through the four phases, timed separately with ``time.perf_counter``:

- load: ``graphrt.load(path)`` (the Keras config is loaded without weights: seeded initializers);
- verify: ``graph.verify()``;
- optimize: ``graphrt.passes.optimize(graph, 3)``;
- compile: ``graphrt.compile(graph, device="cpu", batch_size=1, opt_level=3)`` on the loaded graph
  (it optimizes again, then places, plans memory and uploads the parameters).

The column ``program`` (not in the total) is the launch list the executable builds on its first
call (``exe.program(1)``). Every phase is reported as the median of ``--repeats`` runs with the
min-max spread; each run starts from a fresh load. The load average and the machine are printed
with the table: this is a 2-core shared VM, so rerun on a quiet machine before quoting numbers.
``--gc-off`` runs the phases with Python's cyclic garbage collector disabled, to show its share
(building 20,000 nodes allocates enough containers to trigger many full collections).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("load", "verify", "optimize", "compile")
WIDTH = 8


# ----------------------------------------------------------------------------- model generators

def _dtype_policy():
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
            "registered_name": None}


def keras_sequential(n_layers: int, width: int = WIDTH) -> dict:
    """A Keras 3 ``to_json()`` Sequential config: InputLayer + n_layers of Dense / Activation."""
    layers = [{"module": "keras.layers", "class_name": "InputLayer",
               "config": {"batch_shape": [None, width], "dtype": "float32", "sparse": False,
                          "ragged": False, "name": "input_layer", "optional": False},
               "registered_name": None}]
    for i in range(n_layers):
        k = i // 2
        suffix = "" if k == 0 else f"_{k}"
        if i % 2 == 0:
            layers.append({"module": "keras.layers", "class_name": "Dense", "config": {
                "name": "dense" + suffix, "trainable": True, "dtype": _dtype_policy(),
                "units": width, "activation": "linear", "use_bias": True,
                "kernel_initializer": {"module": "keras.initializers", "class_name": "RandomUniform",
                                       "config": {"seed": None, "minval": -0.05, "maxval": 0.05},
                                       "registered_name": None},
                "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros",
                                     "config": {}, "registered_name": None},
                "kernel_regularizer": None, "bias_regularizer": None, "kernel_constraint": None,
                "bias_constraint": None, "quantization_config": None},
                "registered_name": None, "build_config": {"input_shape": [None, width]}})
        else:
            layers.append({"module": "keras.layers", "class_name": "Activation", "config": {
                "name": "activation" + suffix, "trainable": True, "dtype": _dtype_policy(),
                "activation": "relu"}, "registered_name": None})
    return {"module": "keras", "class_name": "Sequential", "config": {
        "name": f"deep_{n_layers}", "trainable": True, "dtype": _dtype_policy(), "layers": layers,
        "build_input_shape": [None, width]}, "registered_name": None,
        "build_config": {"input_shape": [None, width]}}


def caffe_prototxt(n_layers: int, width: int = WIDTH) -> str:
    """A prototxt: Input (1, width) + n_layers of InnerProduct / in-place ReLU."""
    out = [f'name: "deep_{n_layers}"',
           'layer {\n  name: "data"\n  type: "Input"\n  top: "data"\n'
           f'  input_param {{ shape: {{ dim: 1 dim: {width} }} }}\n}}']
    bottom = "data"
    for i in range(n_layers):
        if i % 2 == 0:
            name = f"fc{i // 2}"
            out.append(f'layer {{\n  name: "{name}"\n  type: "InnerProduct"\n  bottom: "{bottom}"\n'
                       f'  top: "{name}"\n  inner_product_param {{\n    num_output: {width}\n'
                       '    weight_filler { type: "xavier" }\n  }\n}')
            bottom = name
        else:
            out.append(f'layer {{\n  name: "relu{i // 2}"\n  type: "ReLU"\n  bottom: "{bottom}"\n'
                       f'  top: "{bottom}"\n}}')
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- timing

def run_once(path: Path, gc_off: bool = False) -> dict:
    import graphrt
    from graphrt.passes import optimize

    times = {}
    gc.collect()
    if gc_off:
        gc.disable()
    t0 = time.perf_counter()
    g = graphrt.load(path)
    t1 = time.perf_counter()
    g.verify()
    t2 = time.perf_counter()
    optimize(g, 3)
    t3 = time.perf_counter()
    exe = graphrt.compile(g, device="cpu", batch_size=1, opt_level=3)
    t4 = time.perf_counter()
    exe.program(1)
    t5 = time.perf_counter()
    gc.enable()
    times.update(load=t1 - t0, verify=t2 - t1, optimize=t3 - t2, compile=t4 - t3, program=t5 - t4,
                 nodes=len(g))
    times["total"] = t4 - t0
    return times


def summarize(runs: list[dict]) -> dict:
    out = {"nodes": runs[0]["nodes"]}
    for k in PHASES + ("total", "program"):
        vals = [r[k] for r in runs]
        out[k] = (statistics.median(vals), min(vals), max(vals))
    return out


def fmt(cell) -> str:
    med, lo, hi = cell
    return f"{med:.3f} ({lo:.3f}-{hi:.3f})"


def table(rows: list[tuple[str, int, dict]], markdown: bool) -> str:
    head = ["model", "layers", "nodes"] + [f"{p} s" for p in PHASES] + ["total s", "program s"]
    body = [[name, f"{layers:,}", f"{s['nodes']:,}"]
            + [fmt(s[k]) for k in PHASES + ("total", "program")] for name, layers, s in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths))) for r in [head] + body)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keras-layers", type=int, default=20000)
    ap.add_argument("--caffe-layers", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--gc-off", action="store_true", help="disable the cyclic GC while timing")
    args = ap.parse_args(argv)

    import graphrt

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="graphrt_build_scale_") as tmp:
        models = []
        if args.keras_layers > 0:
            p = Path(tmp) / f"deep_{args.keras_layers}.json"
            p.write_text(json.dumps(keras_sequential(args.keras_layers)))
            models.append(("keras json", args.keras_layers, p))
        if args.caffe_layers > 0:
            p = Path(tmp) / f"deep_{args.caffe_layers}.prototxt"
            p.write_text(caffe_prototxt(args.caffe_layers))
            models.append(("caffe prototxt", args.caffe_layers, p))
        for name, layers, path in models:
            runs = []
            for _ in range(args.repeats):
                runs.append(run_once(path, args.gc_off))
                print(f"# {name} {layers}: " + ", ".join(
                    f"{k} {runs[-1][k]:.3f}" for k in PHASES + ("total", "program")),
                    file=sys.stderr, flush=True)
            rows.append((f"{name} ({path.stat().st_size / 2**20:.2f} MiB)", layers, summarize(runs)))
    load_after = os.getloadavg()
    print(f"machine: {platform.platform()}, {platform.machine()}, {platform.processor() or '?'}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"graphrt: {Path(graphrt.__file__).parent}")
    print("load average (1, 5, 15 min): before " + ", ".join(f"{v:.2f}" for v in load_before)
          + "; after " + ", ".join(f"{v:.2f}" for v in load_after))
    print(f"median of {args.repeats} runs (min-max); total = load + verify + optimize + compile; "
          "program = the first call's launch list, not in the total"
          + ("; cyclic GC disabled while timing" if args.gc_off else ""))
    print()
    print(table(rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
