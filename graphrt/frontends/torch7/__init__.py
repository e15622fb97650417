"""Lua Torch7's ``nn`` in Python, argument orders kept, producing a graphrt Graph.

Write the model as the Lua code reads (``:`` becomes ``.``) and call ``to_graph``::

    from graphrt.frontends import torch7 as nn
    net = nn.Sequential()
    net.add(nn.SpatialConvolution(1, 20, 5, 5)).add(nn.SpatialMaxPooling(2, 2, 2, 2))
    net.add(nn.View(-1).setNumInputDims(3))
    net.add(nn.Linear(20 * 12 * 12, 10)).add(nn.LogSoftMax())
    g = net.to_graph(input_shape=(1, 28, 28), seed=0)

The graph is always in batch mode: ``input_shape`` excludes the batch, and the graph input
``input`` is ``(None, *input_shape)``, as Torch sees a batch.

Modules
-------
Containers: ``Sequential``, ``Concat(dim)``, ``DepthConcat(dim)``; ``add`` returns the container
(as Lua's ``net:add(m)`` returns ``net``), ``get(i)`` is 1-based, ``size()``.
``dim`` is written as in Torch, 1-based and counting the batch: ``Concat(2)`` on (N, C, H, W)
concatenates channels (graph axis 1). ``DepthConcat`` zero-pads smaller spatial maps, centred as
Torch does (``floor((H_max - h) / 2)`` rows before, the rest after).

Layers: ``SpatialConvolution(nIn, nOut, kW, kH, dW=1, dH=1, padW=0, padH=padW)`` (and
``SpatialConvolutionMM``; ``.noBias()``), ``SpatialMaxPooling(kW, kH, dW=kW, dH=kH, padW=0,
padH=0)`` and ``SpatialAveragePooling(kW, kH, dW=1, dH=1, padW=0, padH=0)`` with ``.ceil()`` /
``.floor()`` (and ``.setCountIncludePad()`` / ``.setCountExcludePad()``; Torch counts padding by
default), ``SpatialBatchNormalization(n, eps=1e-5, momentum=0.1, affine=True)``,
``BatchNormalization`` (2-D), ``SpatialCrossMapLRN(size, alpha, beta, k)``,
``Linear(inputSize, outputSize, bias=True)``, ``ReLU``, ``LeakyReLU(negval)``, ``Tanh``,
``Sigmoid``, ``SoftMax``, ``LogSoftMax`` (over the features, graph axis 1), ``Dropout(p)``,
``MulConstant(c)``, ``AddConstant(c)``, ``Identity``, ``SpatialZeroPadding(padLeft, padRight,
padTop, padBottom)`` (negative values crop), ``View(sizes...)`` with ``.setNumInputDims(n)``
and ``Reshape(sizes...)``. ``View(-1)`` without ``setNumInputDims`` would fold the batch into one
dimension in Torch; graphrt refuses it with advice. Methods that return ``self`` in Lua return
``self`` here, so calls chain.

Names, parameters, sources
--------------------------
Every module gets its index path in the container tree, 1-based as Torch prints it: the third
module of the root Sequential is ``3``, the second module of the first branch of a Concat at
position 5 is ``5.1.2``. Nodes are named ``<path>_<Type>`` (``10_Linear``,
``5.2.1_SpatialConvolution``; helper nodes ``<path>_<Type>/<what>``) and parameters
``<path>_<field>`` with Torch's field names: ``<path>_weight``, ``<path>_bias`` (OIHW / (out, in)
like Torch itself), ``<path>_running_mean``, ``<path>_running_var`` (not trainable). A module used
as the root itself has path ``1``.

Every node's :class:`~graphrt.ir.graph.Source` is ``(node name, Torch class name, file, line)`` with
the Python file and line where the module object was constructed, so a shape error such as a
``Linear(500, 10)`` fed 10 features points at that line.

Initialization follows Torch's ``reset()``: weights and biases of ``Linear`` and
``SpatialConvolution`` are U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (fan_in = nIn*kW*kH or inputSize);
``SpatialBatchNormalization`` weight U(0, 1), bias 0, running mean 0, running var 1 — drawn from
``np.random.default_rng(seed)`` in module order, weight before bias.

Where the code is
-----------------
This module re-exports the modules, grouped as Torch's ``nn`` documentation groups them:
:mod:`~graphrt.frontends.torch7.containers`, :mod:`~graphrt.frontends.torch7.convolution`
(image modules), :mod:`~graphrt.frontends.torch7.simple` (Linear, BatchNormalization, Dropout,
constants, views) and :mod:`~graphrt.frontends.torch7.transfer` (activations), on the ``Module``
base and the graph builder of :mod:`~graphrt.frontends.torch7.module`.
"""
from __future__ import annotations

from .containers import Concat, Container, DepthConcat, Sequential
from .convolution import (SpatialAveragePooling, SpatialBatchNormalization,
                          SpatialConvolution, SpatialConvolutionMM, SpatialCrossMapLRN,
                          SpatialMaxPooling, SpatialZeroPadding)
from .module import Module
from .simple import (AddConstant, BatchNormalization, Dropout, Identity, Linear,
                     MulConstant, Reshape, View)
from .transfer import LeakyReLU, LogSoftMax, ReLU, Sigmoid, SoftMax, Tanh


__all__ = ["Module", "Container", "Sequential", "Concat", "DepthConcat", "SpatialConvolution",
           "SpatialConvolutionMM", "SpatialMaxPooling", "SpatialAveragePooling",
           "BatchNormalization", "SpatialBatchNormalization", "SpatialCrossMapLRN", "Linear",
           "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Identity", "SoftMax", "LogSoftMax", "Dropout",
           "MulConstant", "AddConstant", "SpatialZeroPadding", "View", "Reshape"]
