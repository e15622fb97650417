"""What a user writes to property-test their own model against graphrt's optimized execution.

Run with ``pytest examples/test_my_model.py`` (graphrt's pytest plugin provides the
``graphrt_equivalence`` fixture; add ``--hypothesis-profile graphrt-thorough`` for more examples).
"""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

import graphrt
from graphrt.frontends import keras
from graphrt.testing import assert_equivalent, inputs_for, tensors

CAFFE = Path(__file__).resolve().parents[2] / "shared" / "models" / "caffe"


def my_model() -> keras.Sequential:
    """The model under test, as the user already wrote it (Keras 1 style)."""
    model = keras.Sequential()
    model.add(keras.Convolution2D(8, 3, 3, border_mode="same", input_shape=(3, 16, 16)))
    model.add(keras.Activation("relu"))
    model.add(keras.MaxPooling2D(pool_size=(2, 2)))
    model.add(keras.Flatten())
    model.add(keras.Dense(10))
    model.add(keras.Activation("softmax"))
    return model


def test_my_model_at_every_level_and_device(graphrt_equivalence):
    graphrt_equivalence(my_model())


GRAPH = my_model().to_graph()


@given(inputs_for(GRAPH, batch=3))
@settings(max_examples=10, deadline=None)
def test_my_model_on_random_inputs(feeds):
    assert_equivalent(GRAPH, x=feeds, opt_levels=(3,))


@given(tensors((2, 3, 16, 16), extreme=True))
@settings(max_examples=5, deadline=None)
def test_extreme_inputs_stay_finite(x):
    y = graphrt.compile(GRAPH, batch_size=2)(x)
    assert np.isfinite(y).all()


@pytest.mark.skipif(not CAFFE.is_dir(), reason="needs ../shared/models/caffe")
def test_my_caffe_file(graphrt_equivalence):
    graphrt_equivalence(graphrt.load(CAFFE / "lenet.prototxt", weights=CAFFE / "lenet_iter_10000.caffemodel"))
