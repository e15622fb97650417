"""The seed's Keras Simple CNN (the classic Keras 1 VGG-like convnet) on 3x100x100 images.

Written with Keras 1 calls, channels first (``input_shape=(3, 100, 100)``), as in the seed; the same
layer list as ``../shared/fixtures/keras/seed_cnn_100.json`` (that model saved by Keras 3).
Run ``python examples/keras_simple_cnn.py`` to print the graph summary.
"""
from __future__ import annotations

from graphrt.frontends.keras import (Activation, Convolution2D, Dense, Dropout, Flatten,
                                     MaxPooling2D, Sequential)

INPUT_SHAPE = (3, 100, 100)


def build() -> Sequential:
    model = Sequential()
    # input: 100x100 images with 3 channels -> (3, 100, 100) tensors.
    # this applies 32 convolution filters of size 3x3 each.
    model.add(Convolution2D(32, 3, 3, border_mode='valid', input_shape=(3, 100, 100)))
    model.add(Activation('relu'))
    model.add(Convolution2D(32, 3, 3))
    model.add(Activation('relu'))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Dropout(0.25))

    model.add(Convolution2D(64, 3, 3, border_mode='valid'))
    model.add(Activation('relu'))
    model.add(Convolution2D(64, 3, 3))
    model.add(Activation('relu'))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Dropout(0.25))

    model.add(Flatten())
    # Note: Keras does automatic shape inference.
    model.add(Dense(256))
    model.add(Activation('relu'))
    model.add(Dropout(0.5))

    model.add(Dense(10))
    model.add(Activation('softmax'))
    return model


def main() -> None:
    print(build().to_graph(seed=0).summary())


if __name__ == "__main__":
    main()
