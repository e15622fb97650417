"""The schema of ``caffe.proto``'s net messages, and the check every prototxt passes through.

Caffe reads a prototxt with protobuf's text parser against its compiled ``caffe.proto``: a field
the message does not declare, a message where a number belongs, an ``optional`` field given twice or
an enum name the enum lacks are errors, never skipped. graphrt keeps its own text reader
(:mod:`.prototxt`, which gives every field its line) and checks the parsed :class:`Message` against
the table below, written from BVLC's ``caffe.proto`` (master, with ``round_mode`` and ``Clip`` /
``Swish``): the messages a ``NetParameter`` can reach, field names, kinds and labels. The protobuf
package's descriptor-based parser was the alternative; it would need a compiled ``caffe.proto``
(``protoc`` or hand-built descriptors) and it reports ``1:5 : Message type "caffe.PoolingParameter"
has no field named "strid"`` without the layer or a suggestion, so graphrt checks its own tree and
names the file, the line, the layer, the field, and the nearest declared field (``did you mean``).

Fork fields
-----------
Public models written by Caffe forks and by PyTorch->Caffe converters use a few fields BVLC lacks.
graphrt accepts exactly these, each with its meaning implemented:

- ``pooling_param.ceil_mode`` (bool, default true): ``false`` rounds the output size down
  (BVLC's ``round_mode: FLOOR``), ``true`` up (``CEIL``). Given with a disagreeing ``round_mode`` it
  is an error.
- ``permute_param { order: ... }`` of the SSD fork's ``Permute`` layer: a transpose by ``order``.

:func:`check_net` returns an equal tree in which enum values given as numbers became their names
(``pool: 1`` -> ``AVE``) and booleans written ``1``/``0`` became ``True``/``False``.
"""
from __future__ import annotations

import difflib

from ...ir.errors import ParseError
from .prototxt import EnumValue, Message

# "field:kind" per field; "*" marks a repeated field; a kind is a scalar, an enum or a message.
_MESSAGES = """
BlobShape: dim*:int64
BlobProto: shape:BlobShape data*:float diff*:float double_data*:double double_diff*:double
  num:int32 channels:int32 height:int32 width:int32
FillerParameter: type:string value:float min:float max:float mean:float std:float sparse:int32
  variance_norm:VarianceNorm
NetParameter: name:string input*:string input_shape*:BlobShape input_dim*:int32
  force_backward:bool state:NetState debug_info:bool layer*:LayerParameter
  layers*:V1LayerParameter
NetState: phase:Phase level:int32 stage*:string
NetStateRule: phase:Phase min_level:int32 max_level:int32 stage*:string not_stage*:string
ParamSpec: name:string share_mode:DimCheckMode lr_mult:float decay_mult:float
LayerParameter: name:string type:string bottom*:string top*:string phase:Phase
  loss_weight*:float param*:ParamSpec blobs*:BlobProto propagate_down*:bool
  include*:NetStateRule exclude*:NetStateRule transform_param:TransformationParameter
  loss_param:LossParameter accuracy_param:AccuracyParameter argmax_param:ArgMaxParameter
  batch_norm_param:BatchNormParameter bias_param:BiasParameter clip_param:ClipParameter
  concat_param:ConcatParameter contrastive_loss_param:ContrastiveLossParameter
  convolution_param:ConvolutionParameter crop_param:CropParameter data_param:DataParameter
  dropout_param:DropoutParameter dummy_data_param:DummyDataParameter
  eltwise_param:EltwiseParameter elu_param:ELUParameter embed_param:EmbedParameter
  exp_param:ExpParameter flatten_param:FlattenParameter hdf5_data_param:HDF5DataParameter
  hdf5_output_param:HDF5OutputParameter hinge_loss_param:HingeLossParameter
  image_data_param:ImageDataParameter infogain_loss_param:InfogainLossParameter
  inner_product_param:InnerProductParameter input_param:InputParameter log_param:LogParameter
  lrn_param:LRNParameter memory_data_param:MemoryDataParameter mvn_param:MVNParameter
  parameter_param:ParameterParameter pooling_param:PoolingParameter
  power_param:PowerParameter prelu_param:PReLUParameter python_param:PythonParameter
  recurrent_param:RecurrentParameter reduction_param:ReductionParameter
  relu_param:ReLUParameter reshape_param:ReshapeParameter scale_param:ScaleParameter
  sigmoid_param:SigmoidParameter softmax_param:SoftmaxParameter spp_param:SPPParameter
  slice_param:SliceParameter swish_param:SwishParameter tanh_param:TanHParameter
  threshold_param:ThresholdParameter tile_param:TileParameter
  window_data_param:WindowDataParameter
TransformationParameter: scale:float mirror:bool crop_size:uint32 mean_file:string
  mean_value*:float force_color:bool force_gray:bool
LossParameter: ignore_label:int32 normalization:NormalizationMode normalize:bool
AccuracyParameter: top_k:uint32 axis:int32 ignore_label:int32
ArgMaxParameter: out_max_val:bool top_k:uint32 axis:int32
ClipParameter: min:float max:float
ConcatParameter: axis:int32 concat_dim:uint32
BatchNormParameter: use_global_stats:bool moving_average_fraction:float eps:float
BiasParameter: axis:int32 num_axes:int32 filler:FillerParameter
ContrastiveLossParameter: margin:float legacy_version:bool
ConvolutionParameter: num_output:uint32 bias_term:bool pad*:uint32 kernel_size*:uint32
  stride*:uint32 dilation*:uint32 pad_h:uint32 pad_w:uint32 kernel_h:uint32 kernel_w:uint32
  stride_h:uint32 stride_w:uint32 group:uint32 weight_filler:FillerParameter
  bias_filler:FillerParameter engine:Engine axis:int32 force_nd_im2col:bool
CropParameter: axis:int32 offset*:uint32
DataParameter: source:string batch_size:uint32 rand_skip:uint32 backend:DB scale:float
  mean_file:string crop_size:uint32 mirror:bool force_encoded_color:bool prefetch:uint32
DropoutParameter: dropout_ratio:float
DummyDataParameter: data_filler*:FillerParameter shape*:BlobShape num*:uint32 channels*:uint32
  height*:uint32 width*:uint32
EltwiseParameter: operation:EltwiseOp coeff*:float stable_prod_grad:bool
ELUParameter: alpha:float
EmbedParameter: num_output:uint32 input_dim:uint32 bias_term:bool weight_filler:FillerParameter
  bias_filler:FillerParameter
ExpParameter: base:float scale:float shift:float
FlattenParameter: axis:int32 end_axis:int32
HDF5DataParameter: source:string batch_size:uint32 shuffle:bool
HDF5OutputParameter: file_name:string
HingeLossParameter: norm:Norm
ImageDataParameter: source:string batch_size:uint32 rand_skip:uint32 shuffle:bool
  new_height:uint32 new_width:uint32 is_color:bool scale:float mean_file:string
  crop_size:uint32 mirror:bool root_folder:string
InfogainLossParameter: source:string axis:int32
InnerProductParameter: num_output:uint32 bias_term:bool weight_filler:FillerParameter
  bias_filler:FillerParameter axis:int32 transpose:bool
InputParameter: shape*:BlobShape
LogParameter: base:float scale:float shift:float
LRNParameter: local_size:uint32 alpha:float beta:float norm_region:NormRegion k:float
  engine:Engine
MemoryDataParameter: batch_size:uint32 channels:uint32 height:uint32 width:uint32
MVNParameter: normalize_variance:bool across_channels:bool eps:float
ParameterParameter: shape:BlobShape
PoolingParameter: pool:PoolMethod pad:uint32 pad_h:uint32 pad_w:uint32 kernel_size:uint32
  kernel_h:uint32 kernel_w:uint32 stride:uint32 stride_h:uint32 stride_w:uint32 engine:Engine
  global_pooling:bool round_mode:RoundMode
PowerParameter: power:float scale:float shift:float
PythonParameter: module:string layer:string param_str:string share_in_parallel:bool
RecurrentParameter: num_output:uint32 weight_filler:FillerParameter bias_filler:FillerParameter
  debug_info:bool expose_hidden:bool
ReductionParameter: operation:ReductionOp axis:int32 coeff:float
ReLUParameter: negative_slope:float engine:Engine
ReshapeParameter: shape:BlobShape axis:int32 num_axes:int32
ScaleParameter: axis:int32 num_axes:int32 filler:FillerParameter bias_term:bool
  bias_filler:FillerParameter
SigmoidParameter: engine:Engine
SliceParameter: axis:int32 slice_point*:uint32 slice_dim:uint32
SoftmaxParameter: engine:Engine axis:int32
SwishParameter: beta:float
TanHParameter: engine:Engine
ThresholdParameter: threshold:float
TileParameter: axis:int32 tiles:int32
WindowDataParameter: source:string scale:float mean_file:string batch_size:uint32
  crop_size:uint32 mirror:bool fg_threshold:float bg_threshold:float fg_fraction:float
  context_pad:uint32 crop_mode:string cache_images:bool root_folder:string
SPPParameter: pyramid_height:uint32 pool:PoolMethod engine:Engine
PReLUParameter: filler:FillerParameter channel_shared:bool
V1LayerParameter: bottom*:string top*:string name:string include*:NetStateRule
  exclude*:NetStateRule type:V1LayerType blobs*:BlobProto param*:string
  blob_share_mode*:DimCheckMode blobs_lr*:float weight_decay*:float loss_weight*:float
  accuracy_param:AccuracyParameter argmax_param:ArgMaxParameter concat_param:ConcatParameter
  contrastive_loss_param:ContrastiveLossParameter convolution_param:ConvolutionParameter
  data_param:DataParameter dropout_param:DropoutParameter dummy_data_param:DummyDataParameter
  eltwise_param:EltwiseParameter exp_param:ExpParameter hdf5_data_param:HDF5DataParameter
  hdf5_output_param:HDF5OutputParameter hinge_loss_param:HingeLossParameter
  image_data_param:ImageDataParameter infogain_loss_param:InfogainLossParameter
  inner_product_param:InnerProductParameter lrn_param:LRNParameter
  memory_data_param:MemoryDataParameter mvn_param:MVNParameter pooling_param:PoolingParameter
  power_param:PowerParameter relu_param:ReLUParameter sigmoid_param:SigmoidParameter
  softmax_param:SoftmaxParameter slice_param:SliceParameter tanh_param:TanHParameter
  threshold_param:ThresholdParameter window_data_param:WindowDataParameter
  transform_param:TransformationParameter loss_param:LossParameter layer:V0LayerParameter
V0LayerParameter: name:string type:string num_output:uint32 biasterm:bool
  weight_filler:FillerParameter bias_filler:FillerParameter pad:uint32 kernelsize:uint32
  group:uint32 stride:uint32 pool:PoolMethod dropout_ratio:float local_size:uint32 alpha:float
  beta:float k:float source:string scale:float meanfile:string batchsize:uint32 cropsize:uint32
  mirror:bool blobs*:BlobProto blobs_lr*:float weight_decay*:float rand_skip:uint32
  det_fg_threshold:float det_bg_threshold:float det_fg_fraction:float det_context_pad:uint32
  det_crop_mode:string new_num:int32 new_channels:int32 new_height:int32 new_width:int32
  shuffle_images:bool concat_dim:uint32 hdf5_output_param:HDF5OutputParameter
"""

# The fork fields graphrt accepts (see the module docstring), in the same notation.
FORK_FIELDS = """
PoolingParameter: ceil_mode:bool
LayerParameter: permute_param:PermuteParameter
PermuteParameter: order*:uint32
"""

_V1_LAYER_TYPES = (
    "NONE=0 ABSVAL=35 ACCURACY=1 ARGMAX=30 BNLL=2 CONCAT=3 CONTRASTIVE_LOSS=37 CONVOLUTION=4 "
    "DATA=5 DECONVOLUTION=39 DROPOUT=6 DUMMY_DATA=32 EUCLIDEAN_LOSS=7 ELTWISE=25 EXP=38 "
    "FLATTEN=8 HDF5_DATA=9 HDF5_OUTPUT=10 HINGE_LOSS=28 IM2COL=11 IMAGE_DATA=12 "
    "INFOGAIN_LOSS=13 INNER_PRODUCT=14 LRN=15 MEMORY_DATA=29 MULTINOMIAL_LOGISTIC_LOSS=16 MVN=34 "
    "POOLING=17 POWER=26 RELU=18 SIGMOID=19 SIGMOID_CROSS_ENTROPY_LOSS=27 SILENCE=36 SOFTMAX=20 "
    "SOFTMAX_LOSS=21 SPLIT=22 SLICE=33 TANH=23 WINDOW_DATA=24 THRESHOLD=31")

_ENUMS = {
    "Phase": "TRAIN TEST", "VarianceNorm": "FAN_IN FAN_OUT AVERAGE",
    "DimCheckMode": "STRICT PERMISSIVE", "NormalizationMode": "FULL VALID BATCH_SIZE NONE",
    "Engine": "DEFAULT CAFFE CUDNN", "DB": "LEVELDB LMDB", "EltwiseOp": "PROD SUM MAX",
    "Norm": "L1=1 L2=2", "NormRegion": "ACROSS_CHANNELS WITHIN_CHANNEL",
    "PoolMethod": "MAX AVE STOCHASTIC", "RoundMode": "CEIL FLOOR",
    "ReductionOp": "SUM=1 ASUM=2 SUMSQ=3 MEAN=4", "V1LayerType": _V1_LAYER_TYPES,
}

_INT_RANGES = {"int32": (-2**31, 2**31), "int64": (-2**63, 2**63), "uint32": (0, 2**32),
               "uint64": (0, 2**64)}
_SCALARS = set(_INT_RANGES) | {"float", "double", "bool", "string", "bytes"}


def _parse_enums() -> dict[str, dict[str, int]]:
    enums = {}
    for name, text in _ENUMS.items():
        values = {}
        for i, item in enumerate(text.split()):
            key, _, num = item.partition("=")
            values[key] = int(num) if num else i
        enums[name] = values
    return enums


def _parse_messages(*texts: str) -> dict[str, dict[str, tuple[str, bool]]]:
    """message name -> field name -> (kind, repeated), from the notation above."""
    messages: dict[str, dict[str, tuple[str, bool]]] = {}
    current = None
    for line in "\n".join(texts).splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            name, _, line = line.partition(":")
            current = messages.setdefault(name, {})
        for item in line.split():
            field, _, kind = item.partition(":")
            current[field.rstrip("*")] = (kind, field.endswith("*"))
    return messages


ENUMS = _parse_enums()
MESSAGES = _parse_messages(_MESSAGES, FORK_FIELDS)
V1_LAYER_TYPE_NUMBERS = ENUMS["V1LayerType"]


def _suggest(word: str, options) -> str:
    """`` (did you mean 'x'?)`` for the nearest of ``options``, compared without case, or ''."""
    lowered = {o.lower(): o for o in options}
    near = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean {lowered[near[0]]!r}?" if near else ""


def suggest(word: str, options) -> str:
    """The "did you mean" clause for ``word`` among ``options`` (empty when nothing is near)."""
    return _suggest(word, options)


class _Checker:
    """Walks a parsed prototxt against :data:`MESSAGES`, building the normalized copy."""

    def __init__(self, file: str | None):
        self.file = file

    def error(self, message: str, line, where: str, layer: str | None) -> ParseError:
        return ParseError(f"{where}: {message}", file=self.file, line=line, node=layer)

    def message(self, msg: Message, mtype: str, where: str, layer: str | None) -> Message:
        fields = MESSAGES[mtype]
        out = Message(line=msg.line)
        for name in msg.names():
            values, lines = msg.getall(name), msg.lines_of(name)
            spec = fields.get(name)
            if spec is None:
                raise self.error(f"{mtype} has no field {name!r}{_suggest(name, fields)}",
                                 lines[0], where, layer)
            kind, repeated = spec
            if not repeated and len(values) > 1:
                shown = ", ".join(str(n) for n in lines if n is not None)
                raise self.error(f"field {name!r} of {mtype} is not repeated but is given "
                                 f"{len(values)} times" + (f" (lines {shown})" if shown else ""),
                                 lines[-1], where, layer)
        for name, value, line in msg.items():
            kind = fields[name][0]
            out.add(name, self.value(value, kind, name, mtype, line, where, layer), line)
        return out

    def value(self, value, kind: str, name: str, mtype: str, line, where: str, layer):
        if kind in MESSAGES:
            if not isinstance(value, Message):
                raise self.error(f"field {name!r} of {mtype} is a message ({kind} {{ ... }}), "
                                 f"got {value!r}", line, where, layer)
            sub_layer = layer
            if kind in ("LayerParameter", "V1LayerParameter") and isinstance(value.get("name"), str):
                sub_layer = value.get("name")
                return self.message(value, kind, f"layer {sub_layer!r}", sub_layer)
            return self.message(value, kind, f"{where} > {name}", sub_layer)
        if isinstance(value, Message):
            raise self.error(f"field {name!r} of {mtype} is a {self.describe(kind)}, got a "
                             "message", line, where, layer)
        checked = self.scalar(value, kind)
        if checked is None:
            raise self.error(f"field {name!r} of {mtype} is a {self.describe(kind)}, got "
                             f"{value!r}{self.enum_hint(value, kind)}", line, where, layer)
        return checked

    @staticmethod
    def describe(kind: str) -> str:
        if kind in ENUMS:
            return f"{kind} enum ({', '.join(ENUMS[kind])})"
        return {"string": "string (in quotes)", "bytes": "string (in quotes)"}.get(kind, kind)

    @staticmethod
    def enum_hint(value, kind: str) -> str:
        return _suggest(str(value), ENUMS[kind]) if kind in ENUMS and isinstance(value, str) else ""

    @staticmethod
    def scalar(value, kind: str):
        """``value`` checked (and normalized) as ``kind``; None when it does not fit."""
        if kind in _INT_RANGES:
            lo, hi = _INT_RANGES[kind]
            ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value < hi
            return value if ok else None
        if kind in ("float", "double"):
            ok = isinstance(value, (int, float)) and not isinstance(value, (bool, EnumValue))
            return value if ok else None
        if kind == "bool":
            if isinstance(value, bool):
                return value
            return bool(value) if type(value) is int and value in (0, 1) else None
        if kind in ("string", "bytes"):
            return value if isinstance(value, str) and not isinstance(value, EnumValue) else None
        values = ENUMS[kind]
        if isinstance(value, EnumValue) and value in values:
            return value
        if type(value) is int:
            names = [k for k, v in values.items() if v == value]
            return EnumValue(names[0]) if names else None
        return None


def check_net(net: Message, file: str | None = None) -> Message:
    """``net`` checked against ``caffe.proto``'s ``NetParameter`` (plus :data:`FORK_FIELDS`).

    Raises ParseError naming the file, the line, the layer and the field (with the nearest declared
    field for an unknown one); returns the normalized copy (enum numbers as names).
    """
    return _Checker(file).message(net, "NetParameter", "the net", None)


__all__ = ["check_net", "suggest", "MESSAGES", "ENUMS", "FORK_FIELDS", "V1_LAYER_TYPE_NUMBERS"]
