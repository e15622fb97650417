"""``graphrt train`` end to end and driving a stand-in Trainer: the options reach the optimizer, the
last partial batch is kept, data files are checked before training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import graphrt
from test_cli import ANN, graphrt_cmd


def test_train_says_when_training_is_not_available(capsys, monkeypatch, tmp_path):
    monkeypatch.delattr(graphrt, "Trainer", raising=False)
    code, _, err = graphrt_cmd(capsys, "train", ANN, "--data", tmp_path / "d.npz")
    assert code == 2 and "GraphrtError: training is not available yet" in err


class FakeTrainer:
    """Stands in for graphrt.Trainer: records how the command line drives it."""

    calls: list = []

    def __init__(self, model, loss="auto", optimizer=None, device="cpu", batch_size=64, opt_level=2,
                 *, threads=None, algorithms=None):
        FakeTrainer.calls.append(("init", model.name, loss, optimizer, device, batch_size))
        FakeTrainer.options = (threads, algorithms)

    def fit(self, batches, epochs=1):
        batches = list(batches)
        FakeTrainer.calls.append(("fit", [(len(x), len(y)) for x, y in batches], epochs))
        return [(len(batches) * epochs, 0.5)]

    def save(self, path):
        Path(path).write_bytes(b"saved")


def test_train_drives_the_trainer(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(graphrt, "Trainer", FakeTrainer, raising=False)
    monkeypatch.setattr(FakeTrainer, "calls", [])
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((40, 20)).astype(np.float32),
             y=rng.integers(0, 10, 40))
    code, out, _ = graphrt_cmd(capsys, "train", ANN, "--data", tmp_path / "d.npz", "--batch", 16,
                               "--epochs", 2, "--lr", 0.05, "--momentum", 0.5, "--weight-decay", 1e-4,
                               "--save", tmp_path / "m.npz", "--json", "--threads", 1,
                               "--algorithms", "default")
    assert code == 0
    (_, name, loss, opt, device, batch), (_, sizes, epochs) = FakeTrainer.calls
    assert (name, loss, device, batch) == ("keras_simple_ann", "auto", "cpu", 16)  # named after the file
    assert FakeTrainer.options == (1, "default")
    assert (opt.lr, opt.momentum, opt.weight_decay) == (0.05, 0.5, 1e-4)
    assert sizes == [(16, 16), (16, 16), (8, 8)] and epochs == 2  # the last partial batch is kept
    report = json.loads(out)
    assert report["steps"] == 6 and report["loss"] == [[6, 0.5]]
    assert (tmp_path / "m.npz").read_bytes() == b"saved"


def test_train_end_to_end(capsys, tmp_path):
    if not hasattr(graphrt, "Trainer"):
        pytest.skip("graphrt.Trainer is not there yet")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((32, 20)).astype(np.float32),
             y=rng.integers(0, 10, 32))
    code, out, err = graphrt_cmd(capsys, "train", ANN, "--data", tmp_path / "d.npz", "--batch", 16,
                                 "--epochs", 2, "--save", tmp_path / "m.npz", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["steps"] == 4 and np.isfinite(report["loss"][-1][1]) and (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("data, message", [
    ("absent.npz", "no such data file"),
    ("d.csv", "must be an .npz"),
    ("nolabels.npz", "must hold x and y arrays"),
    ("short.npz", "32 inputs but 5 labels"),
])
def test_train_data_errors(capsys, monkeypatch, tmp_path, data, message):
    monkeypatch.setattr(graphrt, "Trainer", FakeTrainer, raising=False)
    x = np.zeros((32, 20), np.float32)
    (tmp_path / "d.csv").write_text("1,2\n")
    np.savez(tmp_path / "nolabels.npz", x=x)
    np.savez(tmp_path / "short.npz", x=x, y=np.zeros(5, np.int64))
    code, _, err = graphrt_cmd(capsys, "train", ANN, "--data", tmp_path / data)
    assert code == 2 and message in err


def test_train_data_of_the_wrong_shape(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(graphrt, "Trainer", FakeTrainer, raising=False)
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 7), np.float32), y=np.zeros(8, np.int64))
    code, _, err = graphrt_cmd(capsys, "train", ANN, "--data", tmp_path / "d.npz", "--batch", 4)
    assert code == 2 and "InputError" in err and "have shape (8, 7)" in err and "expects (N, 20)" in err
