"""The HTML page in a real headless browser: Debian's ``chromium`` driven over the DevTools protocol.

No extra Python package: ``tools/browser.py`` speaks the protocol over chromium's
``--remote-debugging-pipe`` with the standard library. The tests skip where chromium is not
installed.

What they check on the optimized GoogLeNet: the page loads with no console error, no exception
and no request other than the page file itself; every node of the graph is in the SVG; a real mouse
click on a node fills the side panel with its output shape and arena offset (compared with the
executable's memory plan); the search box finds ``inception_4a/output``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import graphrt
from graphrt import viz
from tools.browser import CHROMIUM, Chromium

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                "(apt-get install chromium)")


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
    view = plan.views[out]  # a branch of the (free) concat: its channel slice of the concat's buffer
    assert (view.buffer, view.axis) == ("inception_4a/output", 1)
    plane = np.prod(graph.specs[out].shape[2:]) * np.dtype(graph.specs[out].dtype).itemsize
    expected_offset = plan.blocks[view.buffer].offset + view.start * plane
    x, y = visible_center(browser, f'g.node[data-name="{name}"]')
    browser.click(x, y)
    assert browser.js("window.graphrt.selected") == name
    text = panel_text(browser)
    assert text.splitlines()[0] == name
    assert str(graph.specs[out]) in text  # "(N, 208, 14, 14)"
    assert f"arena offset {expected_offset} " in text
    assert f"slice [{view.start}:{view.stop}] of axis 1 of inception_4a/output" in text
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


# ---- fit, overview, highlight, wrapping: bounding boxes in the viewport ---------------------------
BOX_JS = """(el => { const r = el.getBoundingClientRect();
                     return [r.left, r.top, r.right, r.bottom]; })"""


def rect(browser, selector: str) -> list[float]:
    return browser.js(f"{BOX_JS}(document.querySelector({json.dumps(selector)}))")


def inside(inner, outer, slack: float = 1.0) -> bool:
    return (inner[0] >= outer[0] - slack and inner[1] >= outer[1] - slack and inner[2] <= outer[2] + slack
            and inner[3] <= outer[3] + slack)


@pytest.fixture(scope="module")
def keras_cnn_pages(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from seed_models import seed_models

    graph = next(iter(seed_models(["keras_simple_cnn"]))).build()
    view = viz.graph_view(graph, "optimized", batch=1)
    folder = tmp_path_factory.mktemp("keras_pages")
    return {engine: viz.write(view, folder / f"cnn_{engine}.html", engine=engine) for engine in ENGINES}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("model", ["googlenet", "keras_cnn"])
def test_fit_shows_the_whole_graph_centred(browser, googlenet, keras_cnn_pages, model, engine):
    page = googlenet[1][engine] if model == "googlenet" else keras_cnn_pages[engine]
    browser.open(page)
    browser.js("document.getElementById('zoom-fit').click()")
    canvas = browser.js(f"{BOX_JS}(document.getElementById('canvas'))")
    width, height = browser.js("[document.getElementById('canvas').clientWidth, "
                               "document.getElementById('canvas').clientHeight]")
    visible = [canvas[0], canvas[1], canvas[0] + width, canvas[1] + height]  # without scroll bars
    graph = rect(browser, "#canvas svg")
    assert inside(graph, visible), (graph, visible)
    nodes = browser.js(f"[...document.querySelectorAll('#canvas g.node, #canvas g.tensor')].map({BOX_JS})")
    assert nodes and all(inside(n, visible) for n in nodes)
    left, right = graph[0] - visible[0], visible[2] - graph[2]
    top, bottom = graph[1] - visible[1], visible[3] - graph[3]
    assert abs(left - right) <= 2 and abs(top - bottom) <= 2  # centred both ways
    assert min(left, top) <= 14  # and as large as fits: one side meets the margin
    assert browser.js("document.getElementById('overview').hidden")  # all of it shows: no overview


@pytest.mark.parametrize("engine", ENGINES)
def test_overview_of_a_large_graph_moves_the_view(browser, googlenet, engine):
    stages, pages = googlenet
    browser.open(pages[engine])
    assert browser.js("window.graphrt.scale") == 1
    assert not browser.js("document.getElementById('overview').hidden")
    main, overview = rect(browser, "main"), rect(browser, "#overview")
    assert inside(overview, main) and overview[2] - overview[0] < 250
    count = browser.js("document.querySelectorAll('#overview rect[data-node]').length")
    assert count == len(stages.get("optimized").nodes) + 2  # and the input and output tensors
    frame = rect(browser, "#overview .frame")
    assert inside(frame, rect(browser, "#overview svg")) and frame[3] - frame[1] > 2
    last = browser.js("document.querySelector('#canvas g.node[data-name=\"prob\"]').id")
    canvas = rect(browser, "#canvas")
    assert not inside(rect(browser, f"#{last}"), canvas)  # the end of the graph is out of view...
    x, y = browser.js(f"""(() => {{ const r = document.querySelector('#overview rect[data-node="{last}"]')
                                      .getBoundingClientRect();
                                    return [r.left + r.width / 2, r.top + r.height / 2]; }})()""")
    browser.click(x, y)
    assert inside(rect(browser, f"#{last}"), canvas)  # ...and one click on the overview shows it
    assert inside(rect(browser, "#overview .frame"), rect(browser, "#overview svg"))


def clear_search(browser) -> None:
    """Empty the search box as a user does (an input event)."""
    browser.js("(() => { const b = document.getElementById('search'); b.value = '';"
               " b.dispatchEvent(new Event('input', {bubbles: true})); })()")


def marks(browser, kind: str) -> list[tuple[str, list[float]]]:
    return browser.js(f"""[...document.querySelectorAll('#canvas rect.{kind}')]
                          .map(r => [r.dataset.node, {BOX_JS}(r)])""")


@pytest.mark.parametrize("engine", ENGINES)
def test_selected_and_searched_nodes_are_outlined(browser, googlenet, engine):
    stages, pages = googlenet
    browser.open(pages[engine])
    x, y = visible_center(browser, "#search")
    browser.click(x, y)
    browser.type_text("inception_4a/")
    browser.press_enter()
    expected = [n.name for n in stages.get("optimized").nodes
                if "inception_4a/" in n.name or any("inception_4a/" in m for m in n.absorbed)]
    hits = marks(browser, "mark-hit")
    assert len(hits) == len(expected) > 3
    for node, box in hits:  # each outline surrounds its node, outside its border
        assert inside(rect(browser, f"#{node}"), box, slack=0)
    (node, box), = marks(browser, "mark-selected")
    assert inside(rect(browser, f"#{node}"), box, slack=0)
    assert browser.js(f"document.getElementById('{node}').dataset.name") == browser.js("window.graphrt.selected")
    style = browser.js("(() => { const s = getComputedStyle(document.querySelector('rect.mark-selected'));"
                       " return [s.stroke, parseFloat(s.strokeWidth)]; })()")
    assert style[0] == "rgb(230, 81, 0)" and style[1] >= 3
    assert inside(box, rect(browser, "#canvas"))  # scrolled into view
    # clearing the box clears the matches and the count; a failed search's "no match" too
    clear_search(browser)
    assert marks(browser, "mark-hit") == [] and browser.js("document.getElementById('search-status').textContent") == ""
    browser.type_text("no_such_layer")
    browser.press_enter()
    assert browser.js("document.getElementById('search-status').textContent") == "no match"
    clear_search(browser)
    assert browser.js("document.getElementById('search-status').textContent") == ""


@pytest.mark.parametrize("engine", ENGINES)
def test_every_title_fits_its_box(browser, googlenet, engine):
    _, pages = googlenet
    browser.open(pages[engine])
    outside = browser.js(f"""[...document.querySelectorAll('#canvas g.node')].flatMap(g => {{
        const shape = g.querySelector('rect.box, ellipse, path, polygon');
        const box = {BOX_JS}(shape);
        return [...g.querySelectorAll('text')].map(t => [g.dataset.name, t.textContent, {BOX_JS}(t), box])
            .filter(([, , t, b]) => t[0] < b[0] - 0.5 || t[2] > b[2] + 0.5 || t[1] < b[1] - 0.5 || t[3] > b[3] + 0.5)
            .map(([name, text]) => name + ': ' + text);
    }})""")
    assert outside == []


@pytest.mark.parametrize("engine", ENGINES)
def test_side_panel_wraps_long_text(browser, googlenet, engine):
    _, pages = googlenet
    browser.open(pages[engine])
    name = browser.js("window.graphrt.data.nodes.map(n => n.name).find(n => n.startsWith('inception_4a/1x1+'))")
    browser.js(f"window.graphrt.select({json.dumps(name)})")
    panel = browser.js("(() => { const p = document.getElementById('panel');"
                       " return [p.scrollWidth, p.clientWidth]; })()")
    assert panel[0] <= panel[1]
    right = rect(browser, "#panel")[2]
    widest = browser.js(f"Math.max(...[...document.querySelectorAll('#panel *')].map(e => {BOX_JS}(e)[2]))")
    assert widest <= right
    text = browser.js("document.getElementById('panel').innerText")
    assert "bvlc_googlenet_deploy.prototxt" in text.replace("\n", "")  # the whole source path
    assert "KiB" in text and "KIB" not in text
