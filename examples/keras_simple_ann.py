"""The seed's Keras Simple ANN (the classic Keras 1 MLP example), written with Keras 1 calls.

Input: 20 features. Dense(64, tanh) -> Dropout(0.5) -> Dense(64, tanh) -> Dropout(0.5) ->
Dense(10, softmax), weights initialized U(-0.05, 0.05) (Keras 1 ``init='uniform'``).
Run ``python examples/keras_simple_ann.py`` to print the graph summary.
"""
from __future__ import annotations

from graphrt.frontends.keras import Activation, Dense, Dropout, Sequential

INPUT_SHAPE = (20,)


def build() -> Sequential:
    model = Sequential()
    model.add(Dense(64, input_dim=20, init='uniform'))
    model.add(Activation('tanh'))
    model.add(Dropout(0.5))
    model.add(Dense(64, init='uniform'))
    model.add(Activation('tanh'))
    model.add(Dropout(0.5))
    model.add(Dense(10, init='uniform'))
    model.add(Activation('softmax'))
    return model


def main() -> None:
    print(build().to_graph(seed=0).summary())


if __name__ == "__main__":
    main()
