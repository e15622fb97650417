#!/usr/bin/env bash
# The prepared GPU check of the cuda device: one run on a machine with a GPU, nothing downloaded or
# installed (it needs CuPy 14, PyTorch and cuda-bindings already there), under 8 minutes, one
# summary table printed last.
#
#   bash bench/gpu_check.sh                 # from the repository root (graphrt runs from source)
#   BENCH_MODELS="torch_lenet caffe_alexnet" bash bench/gpu_check.sh
#
# graphrt's own pure-Python dependencies (networkx; pytest and hypothesis for the tests) are taken
# from the machine, or from $GPU_DEPS (default .gpu-deps/ in the repository) when it exists: make it
# on a machine with the registry, `pip install --target .gpu-deps networkx pytest hypothesis`, and
# send it along with the working tree.
#
# 1. environment: GPU, driver, CuPy, PyTorch, cuda-bindings, device properties;
# 2. the tests with the cuda device as the default (GRAPHRT_DEVICE=cuda: every op, the structural
#    ones of tests/test_cuda_struct.py too, seed model and random graph against the cpu device,
#    capture and replay, zero-copy in and out, streams);
# 3. the ledger: 10 iterations of exe(x) and of exe.stream -> 10 HtoD and 10 DtoH copies, and the
#    run mode (CUDA graph or plain) each quick model settles on;
# 4. bench/seed_models.py --device cuda: graphrt against PyTorch eager and torch.compile on the
#    same GPU, for a quick subset of the seed models;
# 5. training (bench/gpu_train.py): 10 SGD steps of every seed model on the cuda device against the
#    cpu device (loss and every parameter, the ledger: 10 HtoD / 1 DtoH / 0 DtoD, both prefetch
#    slots captured, nothing on the host), then training images/s against PyTorch eager and
#    torch.compile on the same GPU for a quick subset.
# Logs go to $OUT (default /tmp/graphrt-gpu-check); the exit status is non-zero when a check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export GRAPHRT_DEVICE=cuda
export HYPOTHESIS_PROFILE=ci
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/graphrt-gpu-check}
MODELS=${MODELS:-"keras_simple_cnn torch_lenet mxnet_alexnet torch_inception_bn"}  # ledger, modes
BENCH_MODELS=${BENCH_MODELS:-"torch_lenet mxnet_alexnet"}  # torch.compile compiles each: keep few
TRAIN_MODELS=${TRAIN_MODELS:-"keras_simple_ann keras_simple_cnn caffe_lenet caffe_cifar10_quick \
caffe_alexnet caffe_googlenet mxnet_alexnet torch_lenet torch_inception_bn"}
TRAIN_BENCH_MODELS=${TRAIN_BENCH_MODELS:-"torch_lenet mxnet_alexnet"}
GPU_DEPS=${GPU_DEPS:-$ROOT/.gpu-deps}
if [ -d "$GPU_DEPS" ]; then
  export PYTHONPATH="$PYTHONPATH:$GPU_DEPS"
fi
mkdir -p "$OUT"
START=$(date +%s)
STATUS=0

section() { echo; echo "== $* ($(( $(date +%s) - START )) s) =="; }

section "environment"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: not available"
  "$PY" - <<'EOF'
import platform, sys
print("python", platform.python_version())
for mod in ("numpy", "cupy", "torch", "cuda.bindings"):
    try:
        m = __import__(mod, fromlist=["x"])
        print(mod, getattr(m, "__version__", "?"))
    except Exception as err:
        print(mod, "MISSING:", err)
try:
    import torch
    print("torch cuda:", torch.cuda.is_available(), torch.version.cuda)
except Exception:
    pass
from graphrt.devices.cuda import cuda_available, device_properties
print("cuda available:", cuda_available())
try:
    print("device:", device_properties(0))
except Exception as err:
    print("device: none:", type(err).__name__, err)
EOF
} 2>&1 | tee "$OUT/environment.log"

section "tests (GRAPHRT_DEVICE=cuda)"
TEST_FILES="tests/test_cuda.py tests/test_cuda_training.py tests/test_cuda_elementwise.py tests/test_cuda_struct.py tests/test_testing.py"
[ -f examples/test_my_model.py ] && TEST_FILES="$TEST_FILES examples/test_my_model.py"
# graphrt's pytest plugin (the graphrt_equivalence fixture) is an entry point once installed; from
# source it is loaded by name
PLUGIN="-p graphrt.testing.plugin"
"$PY" -c "import importlib.metadata as m, sys; sys.exit(0 if any(e.name == 'graphrt' for e in \
m.entry_points(group='pytest11')) else 1)" 2>/dev/null && PLUGIN=""
timeout 170 "$PY" -m pytest -q -p no:cacheprovider $PLUGIN -rfEs --tb=short --durations=8 \
    -k "not emulated and not stand_in" $TEST_FILES 2>&1 | tee "$OUT/pytest.log"
TEST_RC=${PIPESTATUS[0]}
[ "$TEST_RC" -ne 0 ] && STATUS=1

section "ledger and run modes"
timeout 45 "$PY" - "$OUT" $MODELS <<'EOF' 2>&1 | tee "$OUT/ledger.log"
import json, sys, time
import numpy as np
import graphrt
from graphrt.testing import relative_error

sys.path.insert(0, "bench")
out_dir, names = sys.argv[1], sys.argv[2:]
from seed_models import seed_models  # bench/seed_models.py (examples/seed_models.py's list)

result = {"ledger": {}, "modes": {}}
rng = np.random.default_rng(0)
for model in seed_models(names):
    g = model.build()
    spec = g.specs[g.inputs[0]]
    batch = model.batch
    xs = [rng.standard_normal(spec.concrete(batch)).astype(spec.dtype) for _ in range(10)]
    exe = graphrt.compile(g, device="cuda", batch_size=batch, opt_level=3)
    cpu = graphrt.compile(g, device="cpu", batch_size=batch, opt_level=3)
    exe(xs[0])  # build and warm up (3 runs: plain, timed plain, captured)
    exe(xs[0])
    exe(xs[0])
    exe.ledger.reset()
    t = time.perf_counter()
    ys = [exe(x) for x in xs]
    call_s = time.perf_counter() - t
    s1 = exe.ledger.summary()
    exe.ledger.reset()
    zs = list(exe.stream(xs))
    s2 = exe.ledger.summary()
    err = max(relative_error(y, cpu(x)) for x, y in zip(xs[:2], ys[:2]))
    err_stream = max(relative_error(z, y) for y, z in zip(ys, zs))
    mode, why = exe.device.run_mode(exe.program(batch))
    row = {"exe HtoD": s1["HtoD"]["invocations"], "exe DtoH": s1["DtoH"]["invocations"],
           "stream HtoD": s2["HtoD"]["invocations"], "stream DtoH": s2["DtoH"]["invocations"],
           "DtoD": s1["DtoD"]["invocations"] + s2["DtoD"]["invocations"],
           "rel err vs cpu": err, "stream vs exe": err_stream, "ms/step": call_s / 10 * 1e3}
    ok = (row["exe HtoD"], row["exe DtoH"], row["stream HtoD"], row["stream DtoH"], row["DtoD"]) \
        == (10, 10, 10, 10, 0) and err < 1e-5 and err_stream < 1e-5
    row["ok"] = ok
    result["ledger"][model.name] = row
    result["modes"][model.name] = f"{mode}: {why}"
    print(model.name, json.dumps(row))
    print("  run mode:", mode, "-", why)
    print("  " + exe.ledger.table().replace("\n", "\n  "))
with open(f"{out_dir}/ledger.json", "w") as f:
    json.dump(result, f, indent=1)
sys.exit(0 if all(r["ok"] for r in result["ledger"].values()) else 1)
EOF
LEDGER_RC=${PIPESTATUS[0]}
[ "$LEDGER_RC" -ne 0 ] && STATUS=1

section "bench/seed_models.py --device cuda"
timeout 80 "$PY" bench/seed_models.py --device cuda --models $BENCH_MODELS --repeats 5 \
    --iterations 10 --min-time 0.2 --warmup 3 --no-ort 2>&1 | tee "$OUT/bench.log"
BENCH_RC=${PIPESTATUS[0]}
[ "$BENCH_RC" -ne 0 ] && STATUS=1

section "training: 10 steps against the cpu device"
timeout 80 "$PY" bench/gpu_train.py --models $TRAIN_MODELS --steps 10 --no-bench 2>&1 \
    | tee "$OUT/train_check.log"
TRAIN_RC=${PIPESTATUS[0]}
[ "$TRAIN_RC" -ne 0 ] && STATUS=1

section "training images/s: graphrt, PyTorch eager, torch.compile"
timeout 95 "$PY" bench/gpu_train.py --models $TRAIN_BENCH_MODELS --steps 10 --iterations 20 \
    --repeats 3 --warmup 3 2>&1 | tee "$OUT/train_bench.log"
TRAIN_BENCH_RC=${PIPESTATUS[0]}
[ "$TRAIN_BENCH_RC" -ne 0 ] && STATUS=1

section "summary"
"$PY" - "$OUT" "$TEST_RC" "$LEDGER_RC" "$BENCH_RC" "$(( $(date +%s) - START ))" "$TRAIN_RC" \
    "$TRAIN_BENCH_RC" <<'EOF'
import json, os, re, sys
out, test_rc, ledger_rc, bench_rc, seconds, train_rc, train_bench_rc = sys.argv[1:]
rows = []
log = open(f"{out}/pytest.log").read() if os.path.exists(f"{out}/pytest.log") else ""
m = re.findall(r"^=*\s*(.*(?:passed|failed|error).*?)\s*=*$", log, re.M)
rows.append(("tests (GRAPHRT_DEVICE=cuda)", "ok" if test_rc == "0" else f"FAIL (rc {test_rc})",
             m[-1] if m else "no pytest summary"))
try:
    ledger = json.load(open(f"{out}/ledger.json"))
except Exception:
    ledger = {"ledger": {}, "modes": {}}
for name, r in ledger["ledger"].items():
    rows.append((f"ledger {name}", "ok" if r["ok"] else "FAIL",
                 f"exe {r['exe HtoD']} HtoD/{r['exe DtoH']} DtoH, stream {r['stream HtoD']}/"
                 f"{r['stream DtoH']}, DtoD {r['DtoD']}, err {r['rel err vs cpu']:.1e}, "
                 f"{r['ms/step']:.2f} ms/step"))
    mode = re.sub(r"captured after blas capture refused: [^;]*", "captured (cuBLAS refused in "
                  "capture)", ledger["modes"][name])
    rows.append((f"mode {name}", "", mode[:200]))
if not ledger["ledger"]:
    rows.append(("ledger", f"FAIL (rc {ledger_rc})", "no result"))
bench = open(f"{out}/bench.log").read() if os.path.exists(f"{out}/bench.log") else ""
found = False
for line in bench.splitlines():
    mm = re.match(r"^(\w+) \(\d+ batches per timed run\): (.*?); load average", line)
    if mm:
        found = True
        vals = dict((k.strip(), float(v.replace(",", ""))) for k, v in
                    re.findall(r"([\w. ]+?) ([\d,.]+) img/s", mm.group(2)))
        g = max(vals.get("graphrt", 0), vals.get("graphrt stream", 0))
        parts = [f"graphrt {g:,.0f} img/s"]
        for k in ("torch", "torch.compile"):
            if vals.get(k):
                parts.append(f"{k} {vals[k]:,.0f} ({g / vals[k]:.2f}x)")
        rows.append((f"bench {mm.group(1)}", "ok", ", ".join(parts)))
if not found:
    rows.append(("bench", f"FAIL (rc {bench_rc})", "no bench rows"))
for log, rc, what in (("train_check.log", train_rc, "train"), ("train_bench.log", train_bench_rc,
                                                                 "train img/s")):
    text = open(f"{out}/{log}").read() if os.path.exists(f"{out}/{log}") else ""
    results = [json.loads(line[7:]) for line in text.splitlines() if line.startswith("RESULT ")]
    for r in results:
        detail = r.get("error") or (
            f"loss err {r['loss rel err']:.1e}, param err {r['param rel err']:.1e}, "
            f"{r['HtoD']} HtoD/{r['DtoH']} DtoH/{r['DtoD']} DtoD, "
            f"{'captured' if r['captured'] else 'NOT captured'}, batch {r['check batch']}")
        if what == "train img/s" and "graphrt img/s" in r:
            g = r["graphrt img/s"]
            detail = f"graphrt {g:,.0f} img/s" + "".join(
                f", {k} {r[k + ' img/s']:,.0f} ({g / r[k + ' img/s']:.2f}x)"
                for k in ("torch", "torch.compile") if r.get(k + " img/s"))
        rows.append((f"{what} {r['model']}", "ok" if r["ok"] else "FAIL", detail))
    if not results:
        rows.append((what, f"FAIL (rc {rc})", "no result"))
rows.append(("total time", "ok" if int(seconds) < 480 else "SLOW", f"{seconds} s"))
w0 = max(len(r[0]) for r in rows)
w1 = max(len(r[1]) for r in rows)
print(f"{'check':{w0}s}  {'result':{w1}s}  detail")
for a, b, c in rows:
    print(f"{a:{w0}s}  {b:{w1}s}  {c}")
EOF
exit $STATUS
