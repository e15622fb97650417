"""Training on the GPU: graphrt's cuda device against its cpu device (the check) and against PyTorch
eager and ``torch.compile`` on the same GPU (images/s). Part of ``bench/gpu_check.sh``.

    python bench/gpu_train.py                                   # check + images/s, default models
    python bench/gpu_train.py --models torch_lenet --steps 10 --no-bench
    python bench/gpu_train.py --stand-in --batch 2 --no-bench   # on the CUDA stand-in (no GPU)

The check, per model: ``Trainer.fit`` of ``--steps`` batches with ``loss_every=--steps`` on the
cuda device and on the cpu device, both ``SGD(lr=0.001, momentum=0.9, weight_decay=5e-4)`` from
the same (He-scale, seeded) weights, in float64 by default (``--check-dtype``: in float32 the GPU's
GEMMs round in another order than the host's BLAS, and in a deep net a pre-activation within
rounding of 0 or a max-pool near-tie then takes the other branch on the two devices, moving whole
gradient entries; tests/test_cuda_training.py shows it): the loss read and every parameter
(relative error < 1e-5, 1e-3 with TF32), the ledger (one HtoD per batch, one DtoH for the one loss read, no DtoD), nothing
placed on the host, and both prefetch slots' programs captured into CUDA graphs.

Images/s: ``Trainer.fit`` (the prefetch pipeline, the loss read every 10 steps) against PyTorch
(``bench/train_models.torch_trainer`` on the GPU, the batches already there, ``loss.item()`` every
10 steps) eager and with its forward through ``torch.compile``; each the median of ``--repeats``
timed runs of ``--iterations`` steps after ``--warmup`` steps. One JSON line per model (``RESULT``)
and the table last; the exit status is non-zero when a check failed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # graphrt and tools/ from the source tree
sys.path.insert(0, str(HERE))

import graphrt  # noqa: E402
from graphrt.testing import as_float64, relative_error  # noqa: E402

import train_models  # noqa: E402

DEFAULT_MODELS = ["keras_simple_ann", "torch_lenet", "caffe_cifar10_quick", "keras_simple_cnn",
                  "mxnet_alexnet", "torch_inception_bn"]
SOLVER = train_models.SOLVER


def build(name: str, seed: int = 3) -> tuple[graphrt.Graph, int]:
    """The seed model ``name`` with He-scale weights and small nonzero vectors (as the tests draw
    them: a bias ahead of a batch norm would otherwise hold only rounding noise), and its batch."""
    model = train_models.seed_models([name])[0]
    g = model.build()
    rng = np.random.default_rng(seed)
    for key, value in list(g.params.items()):
        if value.dtype.kind != "f":
            continue
        if value.ndim >= 2:
            fan_in = int(np.prod(value.shape[1:]))
            g.params[key] = (rng.standard_normal(value.shape) * np.sqrt(2.0 / fan_in)).astype(value.dtype)
        elif value.ndim == 1 and value.size > 1 and not value.any():
            g.params[key] = (rng.standard_normal(value.shape) * 0.1).astype(value.dtype)
    return g, model.batch


def cuda_device():
    from graphrt.devices.cuda import CudaDevice

    return CudaDevice(graphs=True)


def check(g: graphrt.Graph, batch: int, steps: int, rtol: float) -> dict:
    """The cuda device's ``steps`` steps against the cpu device's (see the module docstring)."""
    opt = graphrt.optim.SGD(**SOLVER)
    with warnings.catch_warnings():
        warnings.simplefilter("error", graphrt.FallbackWarning)
        dev = graphrt.Trainer(g, optimizer=opt, device=cuda_device(), batch_size=batch)
    cpu = graphrt.Trainer(g, optimizer=opt, device="cpu", batch_size=batch)
    pairs = train_models.make_batches(g, batch, steps)
    dev.exe.ledger.reset()
    start = time.perf_counter()
    got = dev.fit(pairs, loss_every=steps, progress=False)
    seconds = time.perf_counter() - start
    want = cpu.fit(pairs, loss_every=steps, progress=False)
    loss_err = max(abs(a - b) / max(abs(a), 1e-30) for (_, a), (_, b) in zip(want, got))
    pc, pd = cpu.parameters(), dev.parameters()
    worst = max((relative_error(pd[k], pc[k]), k) for k in pc)
    s = dev.exe.ledger.summary()
    ledger = (s["HtoD"]["invocations"], s["DtoH"]["invocations"], s["DtoD"]["invocations"])
    modes = [dev.exe.device.run_mode(dev.exe.program(batch, slot)) for slot in (0, 1)]
    captured = all(m.startswith("graph") for m, _ in modes)
    ok = (loss_err < rtol and worst[0] < rtol and ledger == (steps, 1, 0) and captured
          and not dev.exe.host_nodes)
    return {"ok": ok, "check batch": batch, "loss": got[-1][1], "loss rel err": loss_err, "param rel err": worst[0],
            "worst param": worst[1], "HtoD": ledger[0], "DtoH": ledger[1], "DtoD": ledger[2],
            "captured": captured, "mode": modes[0][1][:160], "host nodes": len(dev.exe.host_nodes),
            "fit s": seconds}


def _median_rate(run, pairs, warmup: int, repeats: int) -> float:
    run(pairs[:max(1, warmup)])
    images = sum(len(y) for _, y in pairs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(pairs)
        times.append(time.perf_counter() - start)
    return images / statistics.median(times)


def images_per_second(g: graphrt.Graph, batch: int, args) -> dict:
    pairs = train_models.make_batches(g, batch, args.iterations)
    trainer = graphrt.Trainer(g, optimizer=graphrt.optim.SGD(**SOLVER), device=cuda_device(),
                              batch_size=batch)
    rates = {"graphrt": _median_rate(
        lambda ps: trainer.fit(ps, loss_every=10, progress=False), pairs, args.warmup, args.repeats)}
    if args.no_torch:
        return rates
    import torch

    on_gpu = [(torch.as_tensor(x, device="cuda"), torch.as_tensor(y, device="cuda"))
              for x, y in pairs]
    for label, compiled in (("torch", False), ("torch.compile", True)):
        try:
            _, _, step = train_models.torch_trainer(g, device="cuda", compiled=compiled)

            def run(ps, step=step):
                for k, (x, y) in enumerate(ps):
                    loss = step(x, y)
                    if (k + 1) % 10 == 0 or k + 1 == len(ps):
                        loss.item()
            rates[label] = _median_rate(run, on_gpu, args.warmup, args.repeats)
        except Exception as err:  # a model PyTorch cannot run is reported, not fatal
            print(f"  {label}: {type(err).__name__}: {str(err)[:200]}", flush=True)
    return rates


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--steps", type=int, default=10, help="steps of the check")
    ap.add_argument("--batch", type=int, help="batch of the timed runs (default: the model's)")
    ap.add_argument("--check-batch", type=int, default=8,
                    help="batch of the check, at most the model's (the cpu device trains it too)")
    ap.add_argument("--check-dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--iterations", type=int, default=30, help="steps per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-bench", action="store_true", help="the check only")
    ap.add_argument("--no-torch", action="store_true", help="no PyTorch columns")
    ap.add_argument("--stand-in", action="store_true",
                    help="run on the CUDA stand-in of tools/cuda_emulator (no GPU needed)")
    args = ap.parse_args(argv)
    rtol = 1e-3 if os.environ.get("GRAPHRT_TF32", "") not in ("", "0") else 1e-5
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)
    context = contextlib.nullcontext()
    if args.stand_in:
        from tools.cuda_emulator import installed

        context = installed()
    rows, failed = [], False
    with context:
        for name in args.models:
            g, batch = build(name)
            batch = args.batch or batch
            row = {"model": name, "batch": batch}
            try:
                checked = as_float64(g) if args.check_dtype == "float64" else g
                row.update(check(checked, min(batch, args.check_batch), args.steps, rtol))
                if not args.no_bench:
                    row.update({f"{k} img/s": v for k, v in images_per_second(g, batch, args).items()})
            except Exception as err:
                row.update(ok=False, error=f"{type(err).__name__}: {str(err)[:300]}")
            failed |= not row["ok"]
            print("RESULT " + json.dumps(row, default=str), flush=True)
            rows.append(row)
    print(f"\n{'model':22s} {'batch':>5s} {'check':5s} {'loss err':>9s} {'param err':>9s} "
          f"{'HtoD/DtoH/DtoD':>14s} {'graphrt':>9s} {'torch':>9s} {'compile':>9s}  img/s")
    for r in rows:
        cells = [f"{r.get(k + ' img/s', 0):9,.0f}" for k in ("graphrt", "torch", "torch.compile")]
        ledger = f"{r.get('HtoD', '-')}/{r.get('DtoH', '-')}/{r.get('DtoD', '-')}"
        print(f"{r['model']:22s} {r['batch']:5d} {'ok' if r['ok'] else 'FAIL':5s} "
              f"{r.get('loss rel err', float('nan')):9.1e} {r.get('param rel err', float('nan')):9.1e} "
              f"{ledger:>14s} {' '.join(cells)}  {r.get('error', '')}")
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
