"""The seed's models in one list, for the demo, the benchmarks and the plan table.

Each entry builds its graph from the examples in this folder (named after the entry) or from the
real files in ``../shared/models`` (those entries are left out when ``../shared`` is absent; their
graphs keep the name the file gives). ``batch`` is the batch size the benchmark uses for the model.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Callable

import graphrt

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared"


def example(name: str):
    """Import ``examples/<name>.py`` as a module (the examples are scripts, not a package)."""
    key = f"graphrt_example_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@dataclasses.dataclass(frozen=True)
class SeedModel:
    name: str
    build: Callable[[], graphrt.Graph]
    batch: int
    needs_shared: bool = False


def _caffe(file: str, **options) -> Callable[[], graphrt.Graph]:
    return lambda: graphrt.load(SHARED / "models" / "caffe" / file, **options)


def _mxnet_alexnet() -> graphrt.Graph:
    from graphrt.frontends import mxnet

    return mxnet.to_graph(example("mxnet_alexnet").build(), input_shape=(3, 224, 224), name="mxnet_alexnet")


ALL = [
    SeedModel("keras_simple_ann", lambda: example("keras_simple_ann").build().to_graph(name="keras_simple_ann"),
              256),
    SeedModel("keras_simple_cnn", lambda: example("keras_simple_cnn").build().to_graph(name="keras_simple_cnn"),
              16),
    SeedModel("caffe_lenet", _caffe("digits_lenet.prototxt", stage=["deploy"],
                                    input_shape=(1, 28, 28), classes=10), 64, True),
    SeedModel("caffe_cifar10_quick", _caffe("cifar10_quick.prototxt"), 64, True),
    SeedModel("caffe_alexnet", _caffe("bvlc_alexnet_deploy.prototxt"), 8, True),
    SeedModel("caffe_googlenet", _caffe("bvlc_googlenet_deploy.prototxt"), 4, True),
    SeedModel("mxnet_alexnet", _mxnet_alexnet, 8),
    SeedModel("torch_lenet", lambda: example("torch_lenet").build().to_graph(input_shape=(1, 28, 28),
                                                                       name="torch_lenet"), 64),
    SeedModel("torch_inception_bn", lambda: example("torch_inception_bn").build().to_graph(
        input_shape=(3, 224, 224), name="torch_inception_bn"), 4),
]


def seed_models(names=None) -> list[SeedModel]:
    """The seed models available here (Caffe's need ../shared), optionally only those named."""
    chosen = [m for m in ALL if not m.needs_shared or SHARED.is_dir()]
    if names:
        unknown = set(names) - {m.name for m in ALL}
        if unknown:
            raise SystemExit(f"unknown model(s) {sorted(unknown)}; known: {[m.name for m in ALL]}")
        chosen = [m for m in chosen if m.name in names]
    return chosen
