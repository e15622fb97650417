"""``make docs``: regenerate the README's pictures from the code, so they show what it does today.

    python tools/docs_images.py [--out docs]

- ``docs/memory_plan.png``: ``graphrt plan examples/torch_inception_bn.py --threads 1 --algorithms
  default`` at batch 1 (the plan of the README table: no cores or timings in it);
- ``docs/inception_bn.png``: the HTML page of the same model (``graphrt viz``, the built-in layout,
  so the picture does not depend on the installed Graphviz), opened in headless chromium at
  1400x900 with a fused convolution selected, as a screenshot. Without chromium this one is
  skipped with a message saying how to get it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphrt.cli import main as graphrt_main  # noqa: E402
from tools.browser import CHROMIUM, Chromium  # noqa: E402

MODEL = Path("examples") / "torch_inception_bn.py"  # relative: the page shows this path, not the checkout's
# one thread and the fixed conv rule, as bench/plan_table.py: the pictures do not depend on the
# machine's cores or on timings
FIXED = ["--threads", "1", "--algorithms", "default"]
SELECTED = "13.2.4_SpatialConvolution"


def page_screenshot(out: Path) -> bool:
    """The Inception-BN page with ``SELECTED`` clicked, as ``out``; False without chromium."""
    if CHROMIUM is None:
        print("skipped docs/inception_bn.png: chromium is not installed (apt-get install chromium)")
        return False
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "inception_bn.html"
        if graphrt_main(["viz", str(MODEL), "-o", str(page), "--layout", "builtin", *FIXED]) != 0:
            raise SystemExit("graphrt viz failed")
        browser = Chromium(1400, 900)
        try:
            browser.open(page)
            if not browser.js(f"window.graphrt.select({SELECTED!r})"):
                raise SystemExit(f"no node {SELECTED!r} on the page")
            browser.screenshot(out)
        finally:
            browser.close()
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    os.chdir(ROOT)
    if graphrt_main(["plan", str(MODEL), "-o", str(args.out / "memory_plan.png"), *FIXED]) != 0:
        return 1
    if page_screenshot(args.out / "inception_bn.png"):
        print(f"wrote {args.out / 'inception_bn.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
