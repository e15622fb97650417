"""``graphrt train``: SGD on an ``.npz`` of inputs and labels (or scikit-learn's digits), with the
loss read back every few steps; ``--save`` writes the trained model as graphrt's ``.npz``."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..ir.errors import GraphrtError, InputError
from .common import emit, load_model


def training_data(spec: str) -> tuple[np.ndarray, np.ndarray]:
    """``digits`` (scikit-learn's, as 1x28x28 images) or an ``.npz`` with inputs ``x`` (or ``data``)
    and labels ``y`` (or ``label``/``labels``)."""
    if spec == "digits":
        from ..training.datasets import digits_28x28

        return digits_28x28()
    path = Path(spec)
    if not path.exists():
        raise GraphrtError("no such data file", file=spec)
    if path.suffix != ".npz":
        raise GraphrtError("training data must be an .npz with arrays x and y, or 'digits'", file=spec)
    with np.load(path, allow_pickle=False) as archive:
        xs = [k for k in ("x", "data", "inputs") if k in archive]
        ys = [k for k in ("y", "label", "labels", "targets") if k in archive]
        if not xs or not ys:
            raise GraphrtError(f"the .npz must hold x and y arrays; it has {sorted(archive.files)}",
                               file=spec)
        x, y = archive[xs[0]], archive[ys[0]]
    if len(x) != len(y):
        raise InputError(f"{len(x)} inputs but {len(y)} labels", file=spec)
    return x, y


def cmd_train(args) -> int:
    import graphrt

    if not hasattr(graphrt, "Trainer"):
        raise GraphrtError("training is not available yet")
    from ..frontends.caffe.solver import is_solver

    if is_solver(args.model):
        return _run_solver(args)
    if args.data is None:
        raise InputError("graphrt train needs --data (an .npz of x and y, or 'digits') unless the "
                         "model is a Caffe solver.prototxt")
    graph = load_model(args)
    x, y = training_data(args.data)
    spec = graph.specs[graph.inputs[0]]
    if x.ndim != len(spec.shape) or any(d is not None and d != v for d, v in zip(spec.shape, x.shape)):
        raise InputError(f"the training inputs have shape {x.shape} but input {graph.inputs[0]!r} "
                         f"expects {spec}", file=args.data)
    optimizer = graphrt.optim.SGD(lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if args.distributed:
        trainer, batches, steps = _distributed(args, graph, optimizer, x, y)
    else:
        batches = [(x[i:i + args.batch], y[i:i + args.batch]) for i in range(0, len(x), args.batch)]
        trainer = graphrt.Trainer(graph, loss=args.loss, optimizer=optimizer, device=args.device,
                                  batch_size=args.batch, opt_level=args.opt_level,
                                  threads=args.threads, algorithms=args.algorithms)
        steps = len(batches)
    start = time.perf_counter()
    history = trainer.fit(batches, epochs=args.epochs)
    seconds = time.perf_counter() - start
    saved = str(trainer.save(args.save)) if args.save else None
    if getattr(trainer, "rank", 0) != 0:
        return 0  # rank 0 reports for the group
    report = {"steps": steps * args.epochs, "seconds": seconds,
              "images_per_s": len(x) * args.epochs / seconds,
              "loss": [[int(s), float(v)] for s, v in history], "saved": saved}
    last = f", final loss {history[-1][1]:.4f}" if history else ""
    emit(args, report, f"{report['steps']} steps in {seconds:.1f} s ({report['images_per_s']:.0f} images/s)"
         f"{last}" + (f"; saved {saved}" if saved else ""))
    return 0


def _distributed(args, graph, optimizer, x, y):
    """A DistributedTrainer, its shards of the global batches and the steps per epoch
    (``--distributed``)."""
    from ..distributed import DistributedSampler, DistributedTrainer, init_process_group

    init_process_group()
    sampler = DistributedSampler(len(x), args.batch, seed=0, shuffle=False)
    trainer = DistributedTrainer(graph, loss=args.loss, optimizer=optimizer, device=args.device,
                                 batch_size=sampler.local_batch, opt_level=args.opt_level)
    return trainer, sampler.batches(x, y, trainer), len(sampler)


def _run_solver(args) -> int:
    """``graphrt train solver.prototxt``: the solver's nets, data layers and schedule; caffe
    train's log on stdout. The device is the solver's ``solver_mode`` (CPU: cpu; GPU: cuda where
    there is a GPU), unless ``--device cuda`` or ``--device auto`` is given."""
    from ..frontends.caffe.solver import load_solver
    from ..training.caffe_solver import run_solver

    solver = load_solver(args.model)
    device = None if args.device == "cpu" else args.device
    if device is None and solver.solver_mode == "GPU" and solver.device_id:
        from ..devices.cuda import CudaDevice, cuda_available

        device = CudaDevice(solver.device_id) if cuda_available() else None
    start = time.perf_counter()
    result = run_solver(solver, device=device, workers=args.workers, log=lambda line: print(line, flush=True))
    report = {"iterations": result["iterations"], "seconds": time.perf_counter() - start,
              "test": result["test"]}
    if args.json:
        emit(args, report, "")
    return 0
