"""CUDA C compiled for the host: the source a ``RawModule`` is given (the cuda device's very
``kernels/*.cu``, as NVRTC would get them) with the host definitions of CUDA's built-ins
(``emulation.h``) in front, a wrapper per kernel that unpacks a ``void**`` argument array, and the
launcher (``emulator.cpp``: each block in turn, its threads as loop iterations or as fibers where
the kernel synchronizes). g++ builds one shared library per source text, cached on disk.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading

import numpy as np

from graphrt.devices.cuda.sources import kernel_params
from graphrt.ir.errors import GraphrtError, UnsupportedError

HERE = pathlib.Path(__file__).resolve().parent
EMULATION_PRELUDE = (HERE / "emulation.h").read_text(encoding="utf-8")
EMULATOR_LAUNCHER = (HERE / "emulator.cpp").read_text(encoding="utf-8")

# the C types of kernel parameters as the host ABI passes them (size in bytes, ctypes type)
CTYPES = {"int": ctypes.c_int32, "long long": ctypes.c_int64, "float": ctypes.c_float,
          "double": ctypes.c_double, "unsigned int": ctypes.c_uint32}


def host_compiler() -> str | None:
    """The host C++ compiler (``$CXX``, else g++ or c++), or None."""
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


def host_source(code: str) -> str:
    """``code`` (a CUDA module) as host C++: built-ins, kernels, wrappers, launcher."""
    wrappers = []
    for name, params in kernel_params(code).items():
        unpack = ", ".join(f"*({ctype}*)a[{i}]" for i, ctype in enumerate(params))
        wrappers.append(f'extern "C" void gr_wrap_{name}(void** a) {{ {name}({unpack}); }}')
    return EMULATION_PRELUDE + code + EMULATOR_LAUNCHER + "\n".join(wrappers) + "\n"


class HostModule:
    """A compiled module: ``params[name]`` are a kernel's parameter C types, ``T`` the module's
    element type, and :meth:`launch` runs a kernel over a grid on the calling thread."""

    def __init__(self, code: str):
        self.params = kernel_params(code)
        self.T = "double" if "typedef double T;" in code else "float"
        self.lib = _load(host_source(code))
        self.lib.gr_emu_launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_uint] * 6 \
            + [ctypes.c_int]
        self.lib.gr_emu_launch.restype = ctypes.c_int
        self.wrappers = {name: ctypes.cast(getattr(self.lib, f"gr_wrap_{name}"), ctypes.c_void_p)
                         for name in self.params}
        self.barriers = {name for name, body in _bodies(code) if "__syncthreads" in body}

    def ctype(self, name: str, i: int):
        """The ctypes type of parameter ``i`` of kernel ``name`` (pointers: None)."""
        c = self.params[name][i]
        if c.endswith("*"):
            return None
        return CTYPES["float" if c == "T" and self.T == "float" else "double" if c == "T" else c]

    def launch(self, name: str, values: list, grid: tuple, block: tuple) -> None:
        """Run kernel ``name`` with ``values`` (ctypes objects, pointers as c_void_p)."""
        argv = (ctypes.c_void_p * max(1, len(values)))(*[ctypes.addressof(v) for v in values])
        self.lib.gr_emu_launch(self.wrappers[name], argv, *grid, *block, int(name in self.barriers))


def _bodies(code: str):
    import re

    return re.findall(r'extern "C" __global__ void (\w+)\((.*?)\n\}', code, re.S)


_LOCK = threading.Lock()
_LIBS: dict = {}


def _load(src: str):
    cxx = host_compiler()
    if cxx is None:
        raise UnsupportedError("the CUDA stand-in needs a host C++ compiler (g++)")
    key = hashlib.sha256((cxx + src).encode()).hexdigest()[:16]
    with _LOCK:
        if key not in _LIBS:
            folder = os.path.join(tempfile.gettempdir(), f"graphrt-cuda-emulator-{os.getuid()}")
            lib = os.path.join(folder, f"kernels-{key}.so")
            if not os.path.exists(lib):
                _build(cxx, src, folder, lib)
            _LIBS[key] = ctypes.CDLL(lib)
        return _LIBS[key]


def _build(cxx: str, src: str, folder: str, lib: str) -> None:
    """Compile ``src`` into the shared library ``lib`` (written whole, then renamed into place)."""
    os.makedirs(folder, exist_ok=True)
    cpp = lib[:-3] + ".cpp"
    with open(cpp, "w") as f:
        f.write(src)
    tmp = f"{lib}.{os.getpid()}.{threading.get_ident()}.tmp"
    proc = subprocess.run([cxx, "-O2", "-std=c++20", "-pthread", "-shared", "-fPIC",
                           "-w", "-o", tmp, cpp], capture_output=True, text=True)
    if proc.returncode:
        raise GraphrtError(f"compiling the kernels for the host failed:\n{proc.stderr[-4000:]}")
    os.replace(tmp, lib)


def strided_at(address: int, dtype, shape, strides):
    """A writable numpy view of host memory at ``address`` (inside a buffer this process owns)."""
    class _Holder:
        pass
    holder = _Holder()
    holder.__array_interface__ = {"data": (address, False), "shape": tuple(shape),
                                  "strides": tuple(strides), "typestr": np.dtype(dtype).str,
                                  "version": 3}
    return np.asarray(holder)
