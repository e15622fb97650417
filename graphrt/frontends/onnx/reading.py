"""Reading an ONNX file: protobuf parsing, ``onnx.checker``, external data and the opset upgrade.

The file is parsed as protobuf data (``onnx.load``): nothing in it is executed. Tensors a model keeps
in external files are read only for a model loaded by its path, only from inside its folder (the
onnx package refuses other paths) and exactly the bytes their shapes need, counted against
``graphrt.limits.MAX_PARAM_BYTES`` before reading.
"""
from __future__ import annotations

from pathlib import Path

from ...ir import limits
from ...ir.errors import ParseError, UnsupportedError, WeightError
from ...ir.limits import Budget
from .fold import np_dtype

MIN_OPSET = 9


def read_model(source, file: str | None = None):
    """A ``ModelProto`` from a path, bytes or a ``ModelProto`` (checked by ``onnx.checker``)."""
    try:
        import onnx
    except ImportError:
        raise UnsupportedError("reading ONNX models needs the onnx package "
                               "(pip install 'graphrt[onnx]')", file=file) from None

    if isinstance(source, onnx.ModelProto):
        model = source
    else:
        try:
            model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(
                str(source), load_external_data=False)
        except Exception as err:  # protobuf's DecodeError and friends
            raise ParseError(f"not a readable ONNX model: {type(err).__name__}: {err}",
                             file=file) from None
    _load_external_data(model, None if isinstance(source, (bytes, onnx.ModelProto))
                        else Path(source).parent, file)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "invalid model"
        raise ParseError(f"the ONNX checker rejects the model: {first}", file=file) from None
    except Exception as err:  # noqa: BLE001 - e.g. UnicodeDecodeError on a non-UTF-8 string field
        raise ParseError(f"the ONNX checker cannot read the model: {type(err).__name__}: {err}",
                         file=file) from None
    return model


def _load_external_data(model, folder: Path | None, file: str | None) -> None:
    """Read the tensors a model keeps in external files: only from a model loaded from a path,
    only inside its folder (the onnx package refuses other paths), and each exactly the bytes its
    shape needs, counted against ``graphrt.limits.MAX_PARAM_BYTES`` before reading."""
    from onnx import external_data_helper as ext

    tensors = [t for t in ext._get_all_tensors(model) if ext.uses_external_data(t)]
    if not tensors:
        return
    if folder is None:
        raise UnsupportedError(f"tensor {tensors[0].name!r} keeps its data in an external file, "
                               "but the model was not read from a path: load it by its path so "
                               "that its folder is known", file=file)
    budget = Budget()
    for tensor in tensors:
        entries = {e.key: e for e in tensor.external_data}
        need = limits.nbytes_of(tensor.dims, np_dtype(tensor.data_type))
        budget.take("param", need, f"external tensor {tensor.name!r}", file=file)
        if "length" not in entries:  # so onnx reads what the shape needs, not the whole file
            entry = tensor.external_data.add()
            entry.key, entry.value = "length", str(need)
        elif entries["length"].value.strip() != str(need):
            raise WeightError(f"external tensor {tensor.name!r} of shape {tuple(tensor.dims)} "
                              f"needs {need:,} bytes but declares length "
                              f"{entries['length'].value!r}", file=file)
    try:
        ext.load_external_data_for_model(model, str(folder))
    except Exception as err:  # noqa: BLE001 - a path outside the folder, a missing file, ...
        raise WeightError(f"cannot read external data: {type(err).__name__}: {err}",
                          file=file) from None


def upgrade(model, file: str | None):
    """Models older than opset 9 go through ONNX's version converter first."""
    if opset_of(model) >= MIN_OPSET:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, MIN_OPSET)
    except Exception as err:  # the converter raises RuntimeError/IndexError with C++ assertion text
        first = (str(err).strip().splitlines() or ["no message"])[0]
        raise UnsupportedError(f"the model uses opset {opset_of(model)}; graphrt reads opset "
                               f"{MIN_OPSET} and later and ONNX's version converter could not "
                               f"convert it: {first}", file=file) from None


def opset_of(model) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


__all__ = ["read_model", "upgrade", "opset_of", "MIN_OPSET"]
