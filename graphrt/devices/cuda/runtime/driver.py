"""What the CUDA runtime says about the GPU and its errors, through cuda-python when it is
installed, else CuPy (imported only when asked)."""
from __future__ import annotations


def cuda_error_text(code: int) -> str:
    """The CUDA runtime's name and description of an error code (cuda-python, else CuPy)."""
    try:
        from cuda.bindings import runtime as rt

        _, name = rt.cudaGetErrorName(rt.cudaError_t(code))
        _, text = rt.cudaGetErrorString(rt.cudaError_t(code))
        return f"{name.decode()}: {text.decode()}"
    except Exception:
        pass
    try:
        import cupy

        text = cupy.cuda.runtime.getErrorString(code)
        return text.decode() if isinstance(text, bytes) else str(text)
    except Exception:
        return f"CUDA error {code}"


def device_properties(device_id: int = 0) -> dict:
    """Name, compute capability, memory, SMs and driver/runtime versions (cuda-python, else CuPy)."""
    try:
        return _properties_from_cuda_python(device_id)
    except Exception:
        return _properties_from_cupy(device_id)


def _properties_from_cuda_python(device_id: int) -> dict:
    from cuda.bindings import runtime as rt

    err, props = rt.cudaGetDeviceProperties(device_id)
    if int(err) != 0:
        raise RuntimeError(cuda_error_text(int(err)))
    _, driver = rt.cudaDriverGetVersion()
    _, runtime = rt.cudaRuntimeGetVersion()
    name = props.name
    return {"name": name.decode(errors="replace").rstrip("\0") if isinstance(name, bytes) else str(name),
            "compute_capability": f"{props.major}.{props.minor}",
            "total_memory": int(props.totalGlobalMem), "multiprocessors": int(props.multiProcessorCount),
            "l2_cache": int(props.l2CacheSize), "driver": int(driver), "runtime": int(runtime),
            "via": "cuda-python"}


def _properties_from_cupy(device_id: int) -> dict:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(device_id)
    name = props["name"]
    return {"name": name.decode(errors="replace") if isinstance(name, bytes) else str(name),
            "compute_capability": f"{props['major']}.{props['minor']}",
            "total_memory": int(props["totalGlobalMem"]),
            "multiprocessors": int(props["multiProcessorCount"]),
            "l2_cache": int(props.get("l2CacheSize", 0)),
            "driver": int(cupy.cuda.runtime.driverGetVersion()),
            "runtime": int(cupy.cuda.runtime.runtimeGetVersion()), "via": "cupy"}
