"""A small corpus of hostile model files, crafted here (nothing downloaded), and a sandbox that loads
one in a subprocess and reports what happened.

:func:`run_sandboxed` loads a file in a fresh Python with an address-space limit, a Python audit
hook recording every ``open`` (``sys.addaudithook``) and, for the opens a native library makes
(libhdf5 following an external link), FIFOs as bait: a thread keeps trying to open each FIFO for
writing, which succeeds only once some code has opened it for reading. It returns the outcome, the
exception, the files opened and how much the process's peak memory (its own and that of any child
it forked) grew during the load. A generous kill timeout bounds a load that never ends.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
KERAS_SEED = SHARED / "fixtures/keras/seed_ann.keras"
KILL_SECONDS = 45  # generous: a hostile file is refused in well under a second on an idle machine

_CHILD = r'''
import json, os, resource, sys, threading, time
spec = json.loads(sys.argv[1])
import importlib
import graphrt, numpy
for module in ("h5py", "onnx", "onnx.reference", "graphrt.frontends.keras.files",
               "graphrt.frontends.onnx.importer", "graphrt.frontends.caffe.net",
               "graphrt.frontends.mxnet.convert", "graphrt.frontends.npz"):
    try:  # imported before measuring: their own files and memory are not the load's
        importlib.import_module(module)
    except ImportError:
        pass
# graphrt.limits (older graphrt: graphrt.frontends.limits, so that a test fails there for its
# finding, not for a missing module)
limits = getattr(graphrt, "limits", None) or importlib.import_module("graphrt.frontends.limits")
for name, value in spec["limits"].items():
    setattr(limits, name, value)
if spec["room_mb"]:
    size = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = size + (spec["room_mb"] << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
opened, baited = [], []
def hook(event, args):
    if threading.current_thread().name == "bait":  # the watchers' own opens
        return
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        opened.append(os.fsdecode(args[0]))
def watch(fifo):
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.005)
            continue
        baited.append(fifo)
        try:
            os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        os.close(fd)
        return
for fifo in spec["fifos"]:
    threading.Thread(target=watch, args=(fifo,), name="bait", daemon=True).start()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sys.addaudithook(hook)
result = {"outcome": "loaded", "type": None, "message": ""}
try:
    exec(spec["code"], {"graphrt": graphrt, "np": numpy, "path": spec["path"]})
except graphrt.GraphrtError as err:
    result.update(outcome="GraphrtError", type=type(err).__name__, message=str(err))
except BaseException as err:
    result.update(outcome="raw", type=type(err).__name__, message=str(err)[:500])
time.sleep(0.05)  # a native open of a bait FIFO is seen by its watcher
after = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
result.update(opened=opened, baited=baited, grew_mb=(after - before) / 1024)
print("RESULT " + json.dumps(result), flush=True)
os._exit(0)
'''


def run_sandboxed(path, code: str = "graphrt.load(path)", *, limits: dict | None = None,
                  room_mb: int = 1536, fifos=(), timeout: float = KILL_SECONDS) -> dict:
    """Run ``code`` (``graphrt``, ``np`` and ``path`` are defined) in a fresh interpreter whose
    address space may grow by ``room_mb`` MiB; see the module docstring. A load that outlives
    ``timeout`` is reported as outcome ``killed``."""
    spec = {"path": str(path), "code": code, "limits": limits or {}, "room_mb": room_mb,
            "fifos": [str(f) for f in fifos]}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        return {"outcome": "killed", "type": None, "message": f"still running after {timeout} s",
                "opened": [], "baited": [], "grew_mb": 0.0}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"outcome": "crashed", "type": None, "opened": [], "baited": [], "grew_mb": 0.0,
                "message": f"exit {done.returncode}: {done.stderr[-2000:]}"}
    return json.loads(lines[-1][len("RESULT "):])


# ------------------------------------------------------------------------------------- Keras

def rezip(members: dict[str, bytes], path: Path, deflate: tuple = ()) -> Path:
    """A zip of ``members`` (those named in ``deflate`` compressed, the rest stored)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob, zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED)
    return path


def keras_with_weights(folder: Path, edit, name: str = "model.keras") -> Path:
    """The seed ANN's archive with its ``model.weights.h5`` changed by ``edit(h5py, h5)``."""
    import h5py

    with zipfile.ZipFile(KERAS_SEED) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    buf = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buf, "r+") as h5:
        edit(h5py, h5)
    members["model.weights.h5"] = buf.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    return rezip(members, folder / name)


def secret_h5(path: Path) -> Path:
    """An HDF5 file outside the model, shaped like the seed's first layer's variables."""
    import h5py

    with h5py.File(path, "w") as h5:
        group = h5.create_group("vars")
        group.attrs["name"] = "dense"
        group["0"] = np.full((20, 64), 7.0, np.float32)
        group["1"] = np.full((64,), 7.0, np.float32)
    return path


def external_storage(target: Path | str):
    """Layer ``dense``'s kernel keeps its bytes in ``target`` (HDF5 external raw storage)."""
    def edit(h5py, h5):
        del h5["layers/dense/vars/0"]
        h5.create_dataset("layers/dense/vars/0", shape=(20, 64), dtype="f4",
                          external=[(str(target), 0, 20 * 64 * 4)])
    return edit


def external_link(target: Path | str):
    """Layer ``dense``'s ``vars`` group is an external link into ``target``."""
    def edit(h5py, h5):
        del h5["layers/dense/vars"]
        h5["layers/dense/vars"] = h5py.ExternalLink(str(target), "/vars")
    return edit


def virtual_dataset(target: Path | str):
    """Layer ``dense``'s kernel is a virtual dataset mapping ``target``'s ``/vars/0``."""
    def edit(h5py, h5):
        del h5["layers/dense/vars/0"]
        layout = h5py.VirtualLayout(shape=(20, 64), dtype="f4")
        layout[...] = h5py.VirtualSource(str(target), "/vars/0", shape=(20, 64))
        h5["layers/dense/vars"].create_virtual_dataset("0", layout, fillvalue=0)
    return edit


def soft_link_cycle(h5py, h5):
    h5["layers/dense/loop"] = h5py.SoftLink("/layers")


def hard_link_dag(depth: int = 40):
    """Groups g0 -> g1 -> ... each linked twice from the one before: 2**depth paths, depth groups."""
    def edit(h5py, h5):
        groups = [h5.create_group(f"dag/g{i}") for i in range(depth + 1)]
        for upper, lower in zip(groups, groups[1:]):
            upper["a"] = lower
            upper["b"] = lower
    return edit


def unwritten_compressed(elements: int = 1 << 28):
    """Layer ``dense``'s kernel declares ``elements`` float32 in gzip chunks, none written."""
    def edit(h5py, h5):
        del h5["layers/dense/vars/0"]
        h5.create_dataset("layers/dense/vars/0", shape=(elements,), dtype="f4",
                          chunks=(1 << 20,), compression="gzip")
    return edit


def compressed_zeros(count: int, elements: int):
    """``count`` extra variables of ``elements`` float32 zeros each, gzip-compressed (tiny files
    declaring big arrays, every chunk written)."""
    def edit(h5py, h5):
        group = h5["layers/dense/vars"]
        for i in range(count):
            ds = group.create_dataset(str(2 + i), shape=(elements,), dtype="f4",
                                      chunks=(min(elements, 1 << 22),), compression="gzip")
            block = np.zeros(min(elements, 1 << 22), np.float32)
            for start in range(0, elements, len(block)):
                ds[start:start + len(block)] = block[:elements - start]
    return edit


def padded_weights_member(folder: Path, pad_bytes: int) -> Path:
    """The seed archive with ``model.weights.h5`` deflated and followed by ``pad_bytes`` zeros (a
    valid HDF5 file: libhdf5 ignores bytes past its end of file), so it declares a large size."""
    with zipfile.ZipFile(KERAS_SEED) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "padded.keras"
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            if name != "model.weights.h5":
                zf.writestr(name, blob)
                continue
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as out:
                out.write(blob)
                zeros = bytes(1 << 22)
                for start in range(0, pad_bytes, len(zeros)):
                    out.write(zeros[:pad_bytes - start])
    return path


# -------------------------------------------------------------------------------------- ONNX

def onnx_model(path: Path, nodes: list, initializers: list = (), extra_graphs=()) -> Path:
    """A checked model ``y = x + <the last node's output "c">`` (x: float [1]) around ``nodes``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        list(nodes) + [helper.make_node("Add", ["x", "c"], ["y"])], "hostile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def const(name: str, values, dtype=np.int64):
    from onnx import helper, numpy_helper

    return helper.make_node("Constant", [], [name],
                            value=numpy_helper.from_array(np.asarray(values, dtype), name))


def onnx_loop(path: Path, trips: int = 1 << 40) -> Path:
    """A ``Loop`` over constants only, ``trips`` times: folding would run it at load."""
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["v_in"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])])
    nodes = [const("trips", trips), const("go", True, np.bool_), const("v0", [1.0], np.float32),
             helper.make_node("Loop", ["trips", "go", "v0"], ["c"], body=body)]
    return onnx_model(path, nodes)


def onnx_constant_of_shape(path: Path, elements: int) -> Path:
    from onnx import helper

    return onnx_model(path, [const("shape", [elements]),
                             helper.make_node("ConstantOfShape", ["shape"], ["c"])])


def onnx_value_sized(path: Path, op: str) -> Path:
    """``Range``, ``Expand`` or ``Tile`` asked for 2**40 elements by a constant."""
    from onnx import helper

    if op == "Range":
        nodes = [const("a", 0.0, np.float32), const("b", float(1 << 40), np.float32),
                 const("d", 1.0, np.float32), helper.make_node("Range", ["a", "b", "d"], ["c"])]
    elif op == "Expand":
        nodes = [const("v", [1.0], np.float32), const("s", [1 << 20, 1 << 20]),
                 helper.make_node("Expand", ["v", "s"], ["c"])]
    else:
        nodes = [const("v", [[1.0]], np.float32), const("r", [1 << 20, 1 << 20]),
                 helper.make_node("Tile", ["v", "r"], ["c"])]
    return onnx_model(path, nodes)


def onnx_external_data(path: Path, location: str) -> Path:
    """An initializer whose bytes are in ``location`` (relative to the model's folder)."""
    from onnx import TensorProto, helper

    tensor = TensorProto(name="c", data_type=TensorProto.FLOAT, dims=[4])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    import onnx

    graph = helper.make_graph([helper.make_node("Add", ["x", "c"], ["y"])], "external",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [tensor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


__all__ = ["run_sandboxed", "keras_with_weights", "secret_h5", "external_storage", "external_link",
           "virtual_dataset", "soft_link_cycle", "hard_link_dag", "unwritten_compressed",
           "compressed_zeros", "padded_weights_member", "rezip", "KILL_SECONDS", "onnx_model", "const",
           "onnx_loop", "onnx_constant_of_shape", "onnx_value_sized", "onnx_external_data"]
