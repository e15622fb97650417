"""The ``graphrt`` command line, end to end on small models: every subcommand, its ``--help``, its
``--json`` report, and its errors (missing file, unknown format, input of the wrong shape, bad
options). ``graphrt viz`` runs on every model in ../shared/models/caffe and every seed example."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import graphrt
from graphrt import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ANN = str(EXAMPLES / "keras_simple_ann.py")
COMMANDS = ["run", "bench", "profile", "viz", "plan", "train"]
# options a prototxt needs when its file does not say (database inputs, DIGITS stages)
PROTOTXT_OPTIONS = {
    "lenet_train_test.prototxt": ["--input-shape", "1", "28", "28"],
    "cifar10_quick_train_test.prototxt": ["--input-shape", "3", "32", "32"],
    "digits_lenet.prototxt": ["--input-shape", "1", "28", "28", "--caffe-stage", "deploy", "--classes", "10"],
}
EXAMPLE_OPTIONS = {"mxnet_alexnet.py": ["--input-shape", "3", "224", "224"]}
SEED_EXAMPLES = ["keras_simple_ann.py", "keras_simple_cnn.py", "mxnet_alexnet.py", "torch_lenet.py",
                 "torch_inception_bn.py"]


def graphrt_cmd(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def lenet(shared: Path) -> Path:
    return shared / "models" / "caffe" / "lenet.prototxt"


def loaded_layers(argv) -> set[str]:
    """The source layers of the model the command line would load (an independent load)."""
    args = cli.parser().parse_args(["run", *map(str, argv)])
    return {n.source.layer or n.name for n in cli.load_model(args).nodes}


# ---- help ---------------------------------------------------------------------------------------
def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^\s+{c}\s", out, re.M) for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: graphrt {command}" in capsys.readouterr().out


def test_no_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    assert exit_.value.code == 2
    assert "required: COMMAND" in capsys.readouterr().err


def subcommands() -> dict:
    top = cli.parser()
    return next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_and_the_model_help_names_every_format(command):
    sub = subcommands()[command]
    missing = [a.option_strings or a.dest for a in sub._actions
               if not isinstance(a, argparse._HelpAction) and a.help != argparse.SUPPRESS
               and not (a.help or "").strip()]
    assert not missing, f"graphrt {command}: options without help: {missing}"
    model = next(a for a in sub._actions if a.dest == "model")
    for ext in (".prototxt", "-symbol.json", ".keras", ".json", ".onnx", ".npz", ".py"):
        assert ext in model.help


def test_option_names_mean_one_thing_in_every_command(capsys):
    """``--caffe-stage`` is Caffe's stage everywhere; ``--stage`` is viz's graph stage and elsewhere
    a usage error that names the option meant."""
    meanings = {}
    for command, sub in subcommands().items():
        for action in sub._actions:
            for flag in action.option_strings:
                if action.help != argparse.SUPPRESS:
                    meanings.setdefault(flag, set()).add(action.dest)
    assert {flag: dests for flag, dests in meanings.items() if len(dests) > 1} == {}
    assert meanings["--caffe-stage"] == {"caffe_stage"} and meanings["--stage"] == {"graph_stage"}
    for command in ("run", "plan", "train"):
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, ANN, "--stage", "deploy"])
        assert exit_.value.code == 2 and "Caffe's stage is --caffe-stage" in capsys.readouterr().err


# ---- run ----------------------------------------------------------------------------------------
def test_run_with_an_input_file(capsys, shared, tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, _ = graphrt_cmd(capsys, "run", lenet(shared), "--batch", 3, "--input", tmp_path / "x.npy",
                               "--json", "--output", tmp_path / "y.npy")
    assert code == 0
    report = json.loads(out)["prob"]
    assert report["shape"] == [3, 10]
    expected = graphrt.run_reference(graphrt.load(lenet(shared)), x)
    assert report["argmax"] == expected.argmax(1).tolist()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-4, atol=1e-6)


def test_run_a_python_model_file(capsys):
    code, out, _ = graphrt_cmd(capsys, "run", ANN, "--batch", 2)
    assert code == 0 and re.search(r"shape \(2, 10\) float32", out)


@pytest.mark.parametrize("argv, message", [
    (["run", "no/such/model.prototxt"], "no such model file"),
    (["run", "no_such_model.py"], "no such file"),
    (["viz", "no/such/model.prototxt", "-o", "x.html"], "no such model file"),
    (["plan", "no/such/model.prototxt", "-o", "x.png"], "no such model file"),
    (["bench", "no/such/model.prototxt"], "no such model file"),
    (["profile", "no/such/model.prototxt"], "no such model file"),
])
def test_missing_model_file(capsys, tmp_path, argv, message):
    argv = [str(tmp_path / a) if "such" in a or a.startswith("x.") else a for a in argv]
    code, out, err = graphrt_cmd(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("graphrt: error: ") and message in err and err.count("\n") == 1


def test_unknown_format(capsys, tmp_path):
    model = tmp_path / "model.txt"
    model.write_text("layer { }")
    code, _, err = graphrt_cmd(capsys, "run", model)
    assert code == 2 and "UnsupportedError" in err and "cannot tell the format of 'model.txt'" in err


def test_input_of_the_wrong_shape(capsys, shared, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 28, 28), np.float32))
    code, _, err = graphrt_cmd(capsys, "run", lenet(shared), "--input", tmp_path / "x.npy")
    assert code == 2
    assert "InputError" in err and "expects shape (N, 1, 28, 28) float32, got (1, 3, 28, 28)" in err


def test_input_file_that_is_not_npy(capsys, shared, tmp_path):
    (tmp_path / "x.npy").write_text("not an array")
    code, _, err = graphrt_cmd(capsys, "run", lenet(shared), "--input", tmp_path / "x.npy")
    assert code == 2 and "InputError" in err


def test_python_model_errors_are_one_line(capsys, tmp_path):
    (tmp_path / "nobuild.py").write_text("x = 1\n")
    code, _, err = graphrt_cmd(capsys, "run", tmp_path / "nobuild.py")
    assert code == 2 and "must define build()" in err
    (tmp_path / "broken.py").write_text("def build():\n    return 1 / 0\n")
    code, _, err = graphrt_cmd(capsys, "run", tmp_path / "broken.py")
    assert code == 2 and "broken.py line 2" in err and "ZeroDivisionError" in err and err.count("\n") == 1


def test_bad_option_values_are_usage_errors(capsys):
    for argv in (["bench", ANN, "--iterations", "0"], ["run", ANN, "--device", "tpu"],
                 ["bench", ANN, "--vs", "tensorflow"], ["viz", ANN]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_run_prints_top_k_probabilities_of_a_classifier(capsys, shared, tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = graphrt.run_reference(graphrt.load(lenet(shared)), x).astype(np.float64)
    code, out, _ = graphrt_cmd(capsys, "run", lenet(shared), "--batch", 2, "--input", tmp_path / "x.npy",
                               "--top-k", 3, "--json")
    assert code == 0
    report = json.loads(out)["prob"]
    assert report["probabilities"] == "softmax"
    for row, probs in zip(report["top"], expected):
        assert [c for c, _ in row] == list(np.argsort(-probs)[:3])
        np.testing.assert_allclose([p for _, p in row], np.sort(probs)[::-1][:3], rtol=1e-5)
    code, out, _ = graphrt_cmd(capsys, "run", lenet(shared), "--batch", 2, "--input", tmp_path / "x.npy")
    best = np.argsort(-expected[1])[:5]
    assert re.search(rf"item 1: class {best[0]} {expected[1, best[0]]:.4f}, class {best[1]} ", out)


def test_run_prints_scalar_outputs_and_writes_every_output(capsys, shared, tmp_path):
    model = [shared / "models" / "caffe" / "lenet_train_test.prototxt", "--input-shape", 1, 28, 28]
    code, out, _ = graphrt_cmd(capsys, "run", *model, "--batch", 4, "--output", tmp_path / "y.npz")
    assert code == 0
    assert re.search(r"^accuracy: [0-9.]+ \(float32 scalar\)$", out, re.M), out
    assert re.search(r"^loss: [0-9.]+ \(float32 scalar\)$", out, re.M), out
    with np.load(tmp_path / "y.npz") as saved:
        assert sorted(saved.files) == ["accuracy", "loss"] and saved["accuracy"].shape == ()
        assert 0 <= saved["accuracy"] <= 1
    code, _, err = graphrt_cmd(capsys, "run", *model, "--output", tmp_path / "y.npy")
    assert code == 2 and "2 outputs (accuracy, loss): write them to an .npz" in err


def test_run_takes_uint8_and_float64_and_refuses_inexact_inputs(capsys, shared, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (1, 1, 28, 28)).astype(np.uint8)
    np.save(tmp_path / "u8.npy", pixels)
    np.save(tmp_path / "f64.npy", pixels.astype(np.float64))
    code, out, _ = graphrt_cmd(capsys, "run", lenet(shared), "--input", tmp_path / "u8.npy", "--json")
    expected = graphrt.run_reference(graphrt.load(lenet(shared)), pixels.astype(np.float32))
    assert code == 0 and json.loads(out)["prob"]["argmax"] == expected.argmax(1).tolist()
    code, out, _ = graphrt_cmd(capsys, "run", lenet(shared), "--input", tmp_path / "f64.npy", "--json")
    assert code == 0 and json.loads(out)["prob"]["argmax"] == expected.argmax(1).tolist()
    np.save(tmp_path / "big.npy", pixels.astype(np.int64) + 2**24)  # integers float32 cannot hold
    code, _, err = graphrt_cmd(capsys, "run", lenet(shared), "--input", tmp_path / "big.npy")
    assert code == 2 and "expects dtype float32, got int64, which does not convert exactly" in err


def test_errors_name_the_command_line_options(capsys, shared):
    code, _, err = graphrt_cmd(capsys, "run", shared / "models" / "caffe" / "lenet_train_test.prototxt")
    assert code == 2 and "--input-shape C H W" in err and "input_shape=" not in err
    code, _, err = graphrt_cmd(capsys, "run", lenet(shared), "--input-shape", 3, 28, 28)
    assert code == 2 and "InputError" in err and "--input-shape 3 28 28 was given" in err
    assert "(1, 28, 28)" in err  # what the file declares
    code, _, _ = graphrt_cmd(capsys, "run", lenet(shared), "--input-shape", 1, 28, 28)
    assert code == 0  # the shape the file declares is fine


def test_python_model_files_name_their_graph(capsys, tmp_path):
    code, out, _ = graphrt_cmd(capsys, "plan", EXAMPLES / "torch_lenet.py", "-o", tmp_path / "p.png",
                               "--json")
    assert code == 0 and json.loads(out)["model"] == "torch_lenet"


# ---- bench and profile --------------------------------------------------------------------------
def test_bench_against_peers(capsys):
    code, out, _ = graphrt_cmd(capsys, "bench", ANN, "--batch", 4, "--iterations", 3, "--warmup", 1,
                               "--vs", "torch", "--vs", "onnxruntime", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["batch"] == 4 and report["results"]["graphrt"]["images_per_s"] > 0
    torch = report["results"]["torch"]
    if "skipped" in torch:  # no torch in this environment: said so, not failed
        assert "torch" in torch["skipped"]
    else:
        assert torch["images_per_s"] > 0 and torch["graphrt_rel_err"] < 1e-4
    assert set(report["results"]["onnxruntime"]) & {"skipped", "images_per_s"}


def test_bench_without_the_torch_converter_skips_the_peer(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(cli.bench, "TORCH_REFERENCE", tmp_path / "absent.py")
    code, out, _ = graphrt_cmd(capsys, "bench", ANN, "--batch", 2, "--iterations", 2, "--vs", "torch")
    assert code == 0
    assert re.search(r"graphrt\s+[\d.]+ images/s", out) and "torch" in out and "skipped" in out


def test_profile_counts_copies_and_writes_a_page(capsys, shared, tmp_path):
    code, out, _ = graphrt_cmd(capsys, "profile", lenet(shared), "--iterations", 2, "--naive",
                               "--json", "--html", tmp_path / "p.html")
    assert code == 0
    report = json.loads(out)["copies"]
    assert report["graphrt"]["HtoD"]["invocations"] == 2
    assert report["naive"]["HtoD"]["invocations"] > report["graphrt"]["HtoD"]["invocations"]
    page = (tmp_path / "p.html").read_text()
    times = [float(t) for t in re.findall(r'"time_ms":([0-9.e+-]+)', page)]
    assert len(times) >= 6 and all(t >= 0 for t in times)


def test_profile_table_and_json_file(capsys, shared, tmp_path):
    code, out, _ = graphrt_cmd(capsys, "profile", lenet(shared), "--iterations", 2,
                               "--json", tmp_path / "p.json")
    assert code == 0 and "== copies: graphrt ==" in out and "HtoD" in out
    assert json.loads((tmp_path / "p.json").read_text())["copies"]["graphrt"]["HtoD"]["invocations"] == 2


def test_profile_prints_per_node_times(capsys, shared):
    code, out, _ = graphrt_cmd(capsys, "profile", lenet(shared), "--iterations", 2, "--layers", 3)
    assert code == 0
    table = out.split("== copies")[0].splitlines()
    assert table[0].startswith("== per-node times: batch 1, mean of 2 runs, step ")
    rows = [line.split() for line in table[2:5]]
    times = [float(r[0]) for r in rows]
    assert times == sorted(times, reverse=True) and all(t >= 0 for t in times)
    assert "more nodes (--layers 0 shows all)" in table[5]
    code, out, _ = graphrt_cmd(capsys, "profile", lenet(shared), "--iterations", 2, "--json")
    report = json.loads(out)
    exe = graphrt.compile(graphrt.load(lenet(shared)), batch_size=1, opt_level=3)
    assert {r["node"] for r in report["layers"]} == {launch.node for launch in exe.program(1).launches}
    assert abs(sum(r["percent"] for r in report["layers"]) - 100) < 1e-6
    conv = next(r for r in report["layers"] if r["node"] == "conv1")
    assert conv["op"].startswith("conv") and conv["layers"][0] == "conv1"


# ---- viz and plan -------------------------------------------------------------------------------
def caffe_models():
    from conftest import SHARED

    folder = SHARED / "models" / "caffe"
    return sorted(p.name for p in folder.glob("*.prototxt")) if folder.is_dir() else []


@pytest.mark.parametrize("name", caffe_models())
def test_viz_every_caffe_model(capsys, shared, tmp_path, name):
    model = [shared / "models" / "caffe" / name, *PROTOTXT_OPTIONS.get(name, [])]
    code, out, _ = graphrt_cmd(capsys, "viz", *model, "-o", tmp_path / "g.html", "--layout", "builtin",
                               "--json")
    assert code == 0
    report = json.loads(out)
    assert loaded_layers(model) <= set(report["layers"])  # every source layer is on the page
    page = (tmp_path / "g.html").read_text()
    assert page.count('<g class="node ') == report["nodes"]


@pytest.mark.parametrize("name", SEED_EXAMPLES)
def test_viz_every_seed_example(capsys, tmp_path, name):
    model = [EXAMPLES / name, *EXAMPLE_OPTIONS.get(name, [])]
    code, out, _ = graphrt_cmd(capsys, "viz", *model, "-o", tmp_path / "g.html", "--layout", "builtin",
                               "--json")
    assert code == 0
    assert loaded_layers(model) <= set(json.loads(out)["layers"])


@pytest.mark.parametrize("stage, ext", [("loaded", ".svg"), ("fuse_conv_activation", ".dot"),
                                        ("placed", ".png"), ("optimized", ".html")])
def test_viz_stages_and_formats(capsys, shared, tmp_path, stage, ext):
    out_file = tmp_path / f"g{ext}"
    code, out, _ = graphrt_cmd(capsys, "viz", lenet(shared), "--stage", stage, "-o", out_file)
    assert code == 0 and f"wrote {out_file}" in out and out_file.stat().st_size > 200
    if stage == "placed":
        assert out_file.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [
    (["--stage", "nowhere", "-o", "g.html"], "unknown stage 'nowhere'"),
    (["-o", "g.txt"], "extension must be one of .html, .svg, .png, .dot"),
    (["-o", "missing/dir/g.html"], "the output folder does not exist"),
])
def test_viz_errors(capsys, shared, tmp_path, argv, message):
    argv = [str(tmp_path / a) if a.startswith(("g.", "missing")) else a for a in argv]
    code, _, err = graphrt_cmd(capsys, "viz", lenet(shared), *argv)
    assert code == 2 and message in err


def test_plan_png_is_produced_and_not_blank(capsys, shared, tmp_path):
    mpimg = pytest.importorskip("matplotlib.image")
    code, out, _ = graphrt_cmd(capsys, "plan", shared / "models" / "caffe" / "cifar10_quick.prototxt",
                               "--batch", 8, "-o", tmp_path / "plan.png", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["arena_bytes"] >= report["lower_bound_bytes"] > 0
    img = mpimg.imread(str(tmp_path / "plan.png"))[..., :3]
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert (img.min(axis=2) < 0.9).mean() > 0.05  # ink: rectangles, lines and labels


def test_plan_rejects_an_unknown_extension(capsys, shared, tmp_path):
    code, _, err = graphrt_cmd(capsys, "plan", lenet(shared), "-o", tmp_path / "plan.gif")
    assert code == 2 and "extension must be one of .png, .svg, .pdf" in err


@pytest.mark.parametrize("module", ["graphrt", "graphrt.cli"])
def test_python_dash_m_runs_the_command_line(module):
    """``python -m graphrt`` and ``python -m graphrt.cli`` are the ``graphrt`` command."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: graphrt") and "train" in done.stdout
