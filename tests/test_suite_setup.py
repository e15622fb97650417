"""The test suite's own set-up: the end-of-run note on skipped optional tools names each tool once,
counts every skip it explains and leaves other skips (an excluded ONNX case) alone."""
from __future__ import annotations

from conftest import OPTIONAL_TOOLS, skipped_tools


def test_skip_reasons_are_counted_per_tool():
    reasons = ["chromium is not installed (apt-get install chromium)",
               "chromium is not installed (apt-get install chromium)",
               "Graphviz's dot is not installed",
               "could not import 'torch': No module named 'torch'",
               "could not import 'onnxruntime': No module named 'onnxruntime'",
               "../shared is not present",
               "no GPU (CuPy sees none)",
               "excluded: Pad mode edge/reflect/wrap: graphrt pads with a constant"]
    assert skipped_tools(reasons) == {"chromium": 2, "Graphviz": 1, "PyTorch": 1, "onnx, onnxruntime": 1,
                                      "../shared": 1, "a CUDA GPU": 1}


def test_every_tool_says_how_to_get_it():
    assert len({tool for tool, _, _ in OPTIONAL_TOOLS}) == len(OPTIONAL_TOOLS)
    assert all(how.strip() for _, _, how in OPTIONAL_TOOLS)
