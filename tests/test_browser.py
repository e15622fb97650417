"""The HTML page in a real headless browser: Debian's ``chromium`` driven over the DevTools protocol.

No extra Python package: chromium runs with ``--remote-debugging-pipe`` (commands in on fd 3,
replies and events out on fd 4, JSON messages ending in NUL) and :class:`Chromium` speaks the
protocol with the standard library. The tests skip where chromium is not installed.

What they check on the optimized GoogLeNet: the page loads with no console error, no exception
and no request other than the page file itself; every node of the graph is in the SVG; a real mouse
click on a node fills the side panel with its output shape and arena offset (compared with the
executable's memory plan); the search box finds ``inception_4a/output``.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import graphrt
from graphrt import viz

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                "(apt-get install chromium)")
TIMEOUT_S = 30.0


class BrowserError(RuntimeError):
    pass


class Chromium:
    """A headless chromium with one page, driven over ``--remote-debugging-pipe``."""

    def __init__(self, width: int = 1400, height: int = 900):
        self.profile = tempfile.mkdtemp(prefix="graphrt-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire():  # in the child: the protocol's pipes must be fds 3 and 4
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--disable-dev-shm-usage", "--remote-debugging-pipe",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire, pass_fds=(3, 4))
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        attached = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    # ---- protocol ---------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise BrowserError("chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                raise BrowserError("chromium closed the pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, after: int = 0) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            for ev in self.events[after:]:
                if ev.get("method") == method:
                    return ev
            self.events.append(self._read_message(deadline))

    # ---- page helpers -----------------------------------------------------------------------
    def open(self, path: Path) -> None:
        self.events.clear()
        nav = self.call("Page.navigate", session=True, url=path.resolve().as_uri())
        if nav.get("errorText"):
            raise BrowserError(f"cannot open {path}: {nav['errorText']}")
        self.wait_for("Page.loadEventFired")

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y,
                      button="left" if kind != "mouseMoved" else "none", clickCount=1)

    def type_text(self, text: str) -> None:
        self.call("Input.insertText", session=True, text=text)

    def press_enter(self) -> None:
        for kind in ("rawKeyDown", "char", "keyUp"):
            extra = {"text": "\r"} if kind == "char" else {}
            self.call("Input.dispatchKeyEvent", session=True, type=kind, key="Enter", code="Enter",
                      windowsVirtualKeyCode=13, **extra)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def problems(self, page: Path) -> list[str]:
        """Console errors, uncaught exceptions and requests for anything but ``page`` itself."""
        out = []
        for ev in self.events:
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if url != page.resolve().as_uri() and not url.startswith("data:"):
                    out.append(f"request: {url}")
        return out

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (BrowserError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    chrome = Chromium()
    yield chrome
    chrome.close()


ENGINES = ["builtin"] + (["dot"] if viz.dot_available() else [])


@pytest.fixture(scope="module")
def googlenet(tmp_path_factory):
    from conftest import SHARED

    path = SHARED / "models" / "caffe" / "bvlc_googlenet_deploy.prototxt"
    if not path.exists():
        pytest.skip("../shared is not present")
    graph = graphrt.load(path)
    stages = viz.compile_stages(graph, batch=1, opt_level=3)
    view = viz.build_view(stages.get("optimized"), "optimized", source=graph, plan=stages.exe.plan)
    folder = tmp_path_factory.mktemp("pages")
    pages = {engine: viz.write(view, folder / f"googlenet_{engine}.html", engine=engine)
             for engine in ENGINES}
    return stages, pages


@pytest.fixture(params=ENGINES)
def page(request, browser, googlenet):
    stages, pages = googlenet
    browser.open(pages[request.param])
    assert browser.js("document.body.dataset.ready") == "1"
    return browser, stages, pages[request.param]


def visible_center(browser, selector: str) -> tuple[float, float]:
    """Scroll the element into the canvas and return the centre of its box in the viewport."""
    rect = browser.js(f"""(() => {{
        const el = document.querySelector({json.dumps(selector)});
        el.scrollIntoView({{block: 'center', inline: 'center'}});
        const r = el.getBoundingClientRect();
        return [r.left + r.width / 2, r.top + Math.min(r.height / 2, 12)];
    }})()""")
    return rect[0], rect[1]


def panel_text(browser) -> str:
    return browser.js("document.getElementById('panel').innerText")


def test_page_loads_without_errors_or_requests(page):
    browser, _, path = page
    assert browser.problems(path) == []
    assert browser.js("typeof window.graphrt.search") == "function"


def test_every_optimized_node_is_in_the_svg(page):
    browser, stages, _ = page
    names = browser.js("[...document.querySelectorAll('#canvas svg g.node[data-name]')]"
                       ".map(g => g.dataset.name)")
    assert sorted(names) == sorted(n.name for n in stages.get("optimized").nodes)
    texts = browser.js("document.querySelector('#canvas svg').textContent")
    assert "inception_4a/output" in texts and "inception_5b/relu_pool_proj" in texts


def test_clicking_a_node_shows_its_shape_and_arena_offset(page):
    browser, stages, path = page
    name = "inception_4a/3x3"
    graph, plan = stages.get("optimized"), stages.exe.plan
    out = graph.node(name).outputs[0]
    view = plan.views[out]
    assert view.axis is None
    expected_offset = plan.blocks[view.buffer].offset + view.offset
    x, y = visible_center(browser, f'g.node[data-name="{name}"]')
    browser.click(x, y)
    assert browser.js("window.graphrt.selected") == name
    text = panel_text(browser)
    assert text.splitlines()[0] == name
    assert str(graph.specs[out]) in text  # "(N, 208, 14, 14)"
    assert f"arena offset {expected_offset} " in text
    assert "inception_4a/relu_3x3" in text  # the relu it absorbed
    selected = f"document.querySelector('g.node[data-name=\"{name}\"]').classList.contains('selected')"
    assert browser.js(selected)
    assert browser.problems(path) == []


def test_search_box_finds_inception_4a_output(page):
    browser, stages, path = page
    x, y = visible_center(browser, "#search")
    browser.click(x, y)
    browser.type_text("inception_4a/output")
    browser.press_enter()
    assert browser.js("window.graphrt.selected") == "inception_4a/output"
    assert panel_text(browser).splitlines()[0] == "inception_4a/output"
    assert str(stages.get("optimized").specs["inception_4a/output"]) in panel_text(browser)
    inside = browser.js("""(() => {
        const r = document.querySelector('g.selected').getBoundingClientRect();
        const c = document.getElementById('canvas').getBoundingClientRect();
        return r.top >= c.top && r.bottom <= c.bottom && r.left >= c.left && r.right <= c.right;
    })()""")
    assert inside, "the found node is scrolled into view"
    assert browser.problems(path) == []


def test_search_finds_a_fused_away_layer_by_its_source_name(page):
    browser, _, _ = page
    browser.js("document.getElementById('search').value = ''")
    x, y = visible_center(browser, "#search")
    browser.click(x, y)
    browser.type_text("inception_4a/relu_5x5_reduce")  # absorbed into the merged 1x1 convolution
    browser.press_enter()
    selected = browser.js("window.graphrt.selected")
    assert selected.startswith("inception_4a/1x1+") and "inception_4a/5x5_reduce" in selected


def test_profiled_page_shows_measured_times(browser, tmp_path):
    from graphrt.frontends import keras

    model = keras.Sequential()
    model.add(keras.Dense(8, input_dim=6))
    model.add(keras.Activation("relu"))
    model.add(keras.Dense(3))
    view = viz.graph_view(model.to_graph(), "placed", batch=2, profile=3)
    path = viz.write(view, tmp_path / "profiled.html", engine="builtin")
    browser.open(path)
    x, y = visible_center(browser, 'g.node[data-name="dense_2"]')
    browser.click(x, y)
    text = panel_text(browser)
    assert "MEASURED TIME" in text.upper() and " ms (" in text
    assert "copy" in browser.js("document.querySelector('g.node[data-name=\"dense_1/copy_to_device\"], "
                                "g.node[data-name$=\"copy_to_device\"]').getAttribute('class')")
    assert browser.problems(path) == []
