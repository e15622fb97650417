"""graphrt.viz: stages, annotated views, the layered layout, SVG/DOT/PNG/HTML output, the plan picture.

Independent checks: the layout against its invariants (no overlap within a rank, routes joining the
right boxes) and the isotonic fit against brute force; arena places against the executable's plan;
every source layer of the loaded graph findable in the optimized picture; PNGs read back and
counted for ink.
"""
from __future__ import annotations

import itertools
import random
import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import graphrt
from graphrt import viz
from graphrt.frontends import keras
from graphrt.viz.layout import DUMMY_GAP, NODE_GAP, _isotonic, layered_layout
from graphrt.viz.svg import wrap_name

mpimg = pytest.importorskip("matplotlib.image")


def small_cnn() -> graphrt.Graph:
    model = keras.Sequential()
    model.add(keras.Conv2D(4, (3, 3), input_shape=(3, 8, 8)))
    model.add(keras.Activation("relu"))
    model.add(keras.Dropout(0.5))
    model.add(keras.Flatten())
    model.add(keras.Dense(5))
    model.add(keras.Activation("softmax"))
    return model.to_graph()


@pytest.fixture(scope="module")
def googlenet():
    from conftest import SHARED

    path = SHARED / "models" / "caffe" / "bvlc_googlenet_deploy.prototxt"
    if not path.exists():
        pytest.skip("../shared is not present")
    graph = graphrt.load(path)
    return graph, viz.compile_stages(graph, batch=1, opt_level=3)


def ink(path) -> float:
    """Fraction of pixels that are not (nearly) white."""
    img = mpimg.imread(str(path))[..., :3]
    return float((img.min(axis=2) < 0.9).mean())


# ---- stages and views ---------------------------------------------------------------------------
def test_stages_are_in_pipeline_order_and_unknown_stage_is_named():
    stages = viz.compile_stages(small_cnn())
    names = stages.names()
    assert names[0] == "loaded" and names[-2:] == ["optimized", "placed"]
    assert "remove_identities" in names and "fuse_conv_activation" in names
    assert stages.get("placed") is stages.exe.graph
    with pytest.raises(viz.StageError, match="unknown stage 'nope'.*loaded"):
        stages.get("nope")


def test_view_marks_fused_copy_and_removed_layers():
    graph = small_cnn()
    view = viz.graph_view(graph, "placed")
    kinds = {n.name: n.kind for n in view.nodes}
    assert {kinds[n] for n in kinds if "copy_to" in n} == {"copy"}
    conv = next(n for n in view.nodes if n.op == "conv2d")
    assert conv.kind == "fused" and conv.members[0] == conv.name and len(conv.members) == 2
    shown = {layer for n in view.nodes for layer in n.layers()}
    for node in graph.nodes:  # the dropout was removed by a pass but stays findable
        assert (node.source.layer or node.name) in shown
    assert any("dropout" in e for n in view.nodes for e in n.elided)


def test_arena_places_match_the_plan(googlenet):
    graph, stages = googlenet
    view = viz.build_view(stages.get("optimized"), "optimized", source=graph, plan=stages.exe.plan)
    plan = stages.exe.plan
    checked = 0
    for n in view.nodes:
        for out in n.outputs:
            v = plan.views.get(out["name"])
            if v is None or v.axis is not None:
                continue
            assert out["arena"]["offset"] == plan.blocks[v.buffer].offset + v.offset
            assert out["arena"]["size"] == stages.get("optimized").specs[out["name"]].nbytes(plan.batch)
            checked += 1
    assert checked > 40


def test_every_source_layer_of_googlenet_is_in_the_optimized_svg(googlenet):
    graph, stages = googlenet
    view = viz.build_view(stages.get("optimized"), "optimized", source=graph, plan=stages.exe.plan)
    svg = viz.to_svg(view)
    root = ET.fromstring(svg.split("?>", 1)[1])
    text = {"".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")}
    words = {w for line in text for w in re.split(r"[ +→]+", line.replace(" (removed)", ""))}
    missing = [n.source.layer or n.name for n in graph.nodes if (n.source.layer or n.name) not in words]
    assert missing == []
    groups = [g.get("data-name") for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("data-name")]
    assert sorted(groups) == sorted(n.name for n in stages.get("optimized").nodes)


def test_aliased_concat_lists_its_slices():
    from graphrt.frontends import torch7 as nn

    cat = nn.Concat(2)
    for planes, k, pad in ((4, 1, 0), (5, 3, 1)):
        branch = nn.Sequential()
        branch.add(nn.SpatialConvolution(3, planes, k, k, 1, 1, pad, pad))
        branch.add(nn.ReLU())
        cat.add(branch)
    model = nn.Sequential()
    model.add(cat)
    model.add(nn.ReLU())
    view = viz.graph_view(model.to_graph(input_shape=(3, 8, 8)), "optimized", batch=2)
    concat = next(n for n in view.nodes if n.op == "concat")
    assert concat.kind == "alias" and concat.free
    assert [(s["start"], s["stop"]) for s in concat.slices] == [(0, 4), (4, 9)]
    producers = {e.src for e in view.edges if e.dst == concat.id}
    assert {s["layer"] for s in concat.slices} == {n.name for n in view.nodes if n.id in producers}
    svg = viz.to_svg(view)
    assert all(f"{s['layer']} → [{s['start']}:{s['stop']}]" in svg for s in concat.slices)
    slices = [o["arena"] for n in view.nodes if n.id in producers for o in n.outputs]
    assert all(a["buffer"] == concat.outputs[0]["arena"]["buffer"] and "slice" in a for a in slices)


def test_profiled_view_has_times():
    graph = small_cnn()
    view = viz.graph_view(graph, "optimized", batch=2, profile=2)
    timed = [n for n in view.nodes if n.time_ms is not None]
    assert timed and all(n.time_ms >= 0 for n in timed)
    assert view.info["iterations"] == 2 and view.info["step_ms"] > 0
    assert any(n.free for n in view.nodes if n.op == "flatten")


# ---- layout -------------------------------------------------------------------------------------
def random_dag(seed: int, n: int = 24):
    rng = random.Random(seed)
    nodes = [f"v{i}" for i in range(n)]
    edges = [(nodes[i], nodes[j]) for j in range(1, n)
             for i in rng.sample(range(j), min(j, rng.choice([1, 1, 2])))]
    sizes = {v: (rng.uniform(40, 200), rng.uniform(20, 80)) for v in nodes}
    return nodes, sizes, edges


@pytest.mark.parametrize("seed", range(6))
def test_layout_keeps_boxes_apart_and_routes_join_their_boxes(seed):
    nodes, sizes, edges = random_dag(seed)
    lay = layered_layout(nodes, sizes, edges)
    assert set(lay.boxes) == set(nodes) and len(lay.routes) == len(edges)
    for a, b in itertools.combinations(nodes, 2):
        (ax, at, aw, ah), (bx, bt, bw, bh) = lay.boxes[a], lay.boxes[b]
        if at < bt + bh and bt < at + ah:  # boxes sharing rows keep a gap (an edge may pass between)
            assert abs(ax - bx) >= (aw + bw) / 2 + min(NODE_GAP, 2 * DUMMY_GAP) - 1e-6
    for (u, v), route in zip(edges, lay.routes):
        (ux, ut, uw, uh), (vx, vt, vw, _) = lay.boxes[u], lay.boxes[v]
        assert route[0][1] == pytest.approx(ut + uh) and abs(route[0][0] - ux) <= uw / 2
        assert route[-1][1] == pytest.approx(vt) and abs(route[-1][0] - vx) <= vw / 2
        assert all(p[1] <= q[1] + 1e-9 for p, q in zip(route, route[1:]))  # always downward
        assert 0 <= min(x for x, _ in route) and max(x for x, _ in route) <= lay.width


def test_isotonic_fit_is_the_least_squares_monotone_fit():
    rng = np.random.default_rng(0)
    for _ in range(30):
        values = rng.normal(size=5).round(1).tolist()
        weights = rng.uniform(0.5, 3, size=5).tolist()
        fit = _isotonic(values, weights)
        assert all(a <= b + 1e-12 for a, b in zip(fit, fit[1:]))
        cost = sum(w * (f - v) ** 2 for f, v, w in zip(fit, values, weights))
        grid = np.linspace(min(values), max(values), 15)  # brute force over monotone grid sequences
        best = min(sum(w * (f - v) ** 2 for f, v, w in zip(seq, values, weights))
                   for seq in itertools.combinations_with_replacement(grid, 5))
        assert cost <= best + 1e-9


def test_long_merged_names_wrap_between_layers():
    name = "inception_3a/1x1+inception_3a/3x3_reduce+inception_3a/5x5_reduce"
    lines = wrap_name(name)
    assert len(lines) > 1 and "".join(lines) == name
    assert all(line.rstrip("+").split("+")[0] in name.split("+") for line in lines)


# ---- outputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".html", ".svg", ".png", ".dot"])
def test_write_every_format_with_the_builtin_layout(tmp_path, ext):
    view = viz.graph_view(small_cnn(), "placed")
    out = viz.write(view, tmp_path / f"g{ext}", engine="builtin")
    data = out.read_bytes()
    if ext == ".png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and ink(out) > 0.01
    elif ext == ".svg":
        ET.fromstring(data.decode().split("?>", 1)[1])
    elif ext == ".dot":
        text = data.decode()
        assert text.startswith("digraph") and text.count("->") == len(view.edges)
        assert all(f'id="{n.id}"' in text for n in view.nodes)
    else:
        html = data.decode()
        assert html.count('class="node ') == sum(not n.is_tensor for n in view.nodes)
        # self-contained: the only URLs are XML namespaces and data: URIs
        urls = set(re.findall(r"""\s(?:src|href)\s*=\s*["']([^"']+)""", html))
        assert all(u.startswith("data:") or u.startswith("#") or u.startswith("url(") for u in urls), urls
        assert set(re.findall(r"https?://[^\s\"'<>]+", html)) <= {"http://www.w3.org/2000/svg"}


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("ext", [".html", ".svg", ".png"])
def test_write_with_graphviz(tmp_path, ext):
    view = viz.graph_view(small_cnn(), "optimized")
    out = viz.write(view, tmp_path / f"g{ext}", engine="dot")
    if ext == ".html":
        html = out.read_text()
        for n in view.nodes:
            attr = "data-tensor" if n.is_tensor else "data-name"
            assert f'id="{n.id}"' in html and f'{attr}="{n.name}"' in html
    elif ext == ".png":
        assert ink(out) > 0.01


def test_dot_engine_without_graphviz_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    view = viz.graph_view(small_cnn())
    with pytest.raises(viz.GraphvizError, match="dot' is not installed"):
        viz.write(view, tmp_path / "g.svg", engine="dot")
    assert viz.write(view, tmp_path / "g.html").exists()  # auto falls back to the built-in layout


def test_auto_layout_falls_back_when_dot_fails(tmp_path, monkeypatch, caplog):
    def slow(*args, **kwargs):
        raise viz.GraphvizError("dot took more than 30 s")
    monkeypatch.setattr(viz, "dot_available", lambda: True)
    monkeypatch.setattr(viz, "dot_svg", slow)
    monkeypatch.setattr(viz, "run_dot", slow)
    view = viz.graph_view(small_cnn())
    page = viz.write(view, tmp_path / "g.html").read_text()
    assert page.count('<g class="node ') == sum(not n.is_tensor for n in view.nodes)
    assert "built-in layout instead" in caplog.text
    assert viz.write(view, tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(viz.GraphvizError, match="more than 30 s"):
        viz.write(view, tmp_path / "g.svg", engine="dot")


def test_unknown_extension_and_engine(tmp_path):
    view = viz.graph_view(small_cnn())
    with pytest.raises(graphrt.GraphrtError, match="extension must be one of"):
        viz.write(view, tmp_path / "g.txt")
    with pytest.raises(graphrt.GraphrtError, match="unknown layout engine"):
        viz.write(view, tmp_path / "g.svg", engine="neato")


def test_plan_picture_is_drawn_and_not_blank(tmp_path):
    exe = graphrt.compile(small_cnn(), batch_size=4)
    out = viz.plot_plan(exe.plan, tmp_path / "plan.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(str(out))[..., :3]
    assert ink(out) > 0.05
    blue = np.array([0x4A, 0x7F, 0xC1]) / 255  # activation blocks are drawn
    assert (np.abs(img - blue).max(axis=2) < 0.08).mean() > 0.01
    assert max(viz.live_bytes(exe.plan)) == exe.plan.lower_bound_bytes


def _boxes(fig, texts):
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts]


def _overlapping(boxes) -> list[tuple[int, int]]:
    return [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes[i + 1:], i + 1)
            if a.overlaps(b) and a.width and b.width]


def deep_chain(layers: int) -> graphrt.Graph:
    from graphrt.frontends import keras

    model = keras.Sequential()
    model.add(keras.Dense(16, input_dim=8))
    for _ in range(layers):
        model.add(keras.Dense(16 + _ % 3, activation="tanh"))
    return model.to_graph()


@pytest.mark.parametrize("model", ["googlenet", "deep_chain"])
def test_plan_picture_numbers_the_largest_blocks_and_names_steps(shared, model):
    """The LABELLED largest blocks carry their rank on their rectangle and are named in a column;
    the x axis names the node of each step (GoogLeNet: every step; a 300-layer chain: evenly spaced
    ones); no two labels overlap and every label lies inside the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from graphrt.viz.plan import LABELLED

    if model == "googlenet":
        graph = graphrt.load(shared / "models" / "caffe" / "bvlc_googlenet_deploy.prototxt")
    else:
        graph = deep_chain(300)
    plan = graphrt.compile(graph, batch_size=2, opt_level=3).plan
    fig = viz.plan_figure(plan)
    FigureCanvasAgg(fig)
    ax = fig.axes[0]
    largest = viz.largest_blocks(plan)
    assert len(largest) == LABELLED and largest[0].size == max(b.size for b in plan.blocks.values())
    texts = {t.get_gid(): t for t in ax.texts if t.get_gid()}
    figure_box = fig.bbox
    for rank, block in enumerate(largest, start=1):
        number, label = texts[f"block-number-{rank}"], texts[f"block-label-{rank}"]
        assert number.get_text() == str(rank) and block.name[:30] in label.get_text()
        # the number sits on its block's rectangle (in data coordinates)
        x, y = number.get_position()
        scale = plan.arena_bytes / ax.get_ylim()[1] * 1.08
        assert block.start <= x <= block.end + 1 and block.offset <= y * scale <= block.offset + block.size
    labels = [texts[f"block-label-{r}"] for r in range(1, LABELLED + 1)]
    assert _overlapping(_boxes(fig, labels)) == []
    assert all(figure_box.contains(b.x0, b.y0) and figure_box.contains(b.x1, b.y1)
               for b in _boxes(fig, labels))
    ticks = [t for t in ax.get_xticklabels() if t.get_text()]
    positions = [int(t.get_position()[0]) for t in ticks]
    if model == "googlenet":
        assert positions == list(range(len(plan.steps)))  # 70 steps: every one is named
    else:
        assert 60 <= len(ticks) < len(plan.steps) and len(set(np.diff(positions))) == 1
    assert all(plan.steps[i].startswith(t.get_text().rstrip("…")) for i, t in zip(positions, ticks))
    assert _overlapping(_boxes(fig, ticks)) == []
    assert all(figure_box.contains(b.x0, b.y0) for b in _boxes(fig, ticks))


def test_long_names_wrap_at_layer_boundaries():
    for name in ("a_very_long_layer_name_without_any_plus_signs_that_goes_on_and_on_forever",
                 "model/block_12/branch_3/conv_reduce_3x3+model/block_12/branch_3/conv_reduce_5x5", "x" * 100):
        lines = wrap_name(name)
        assert "".join(lines) == name and all(len(line) <= 45 for line in lines)


def test_op_labels_name_the_source_layer_type_alike():
    """Every box that stands for one source layer shows its op and the layer's type, spelled as the
    framework does, even where they differ only in case (Keras' Conv2D, the conv2d op)."""
    view = viz.graph_view(small_cnn(), "loaded")
    own = [n for n in view.nodes if not n.is_tensor and n.source.get("layer") == n.name]
    subs = {n.name: viz.svg.subtitle(n) for n in own}
    assert subs["conv2d_1"].startswith("conv2d · Conv2D") and subs["dense_1"].startswith("dense · Dense")
    assert len(own) == 6 and all(n.source["type"] in subs[n.name] for n in own)


# ---- names from hostile files ----------------------------------------------------------------

HOSTILE_NAMES = ["<!--<script>", "</script><b>", "a\x01b\x1fc", "lone\ud800surrogate", 'q"uote\\',
                 "new\nline\ttab", "]]>&amp;", "$\\frac{1}{0}$", "\x7f\x85\ufffe"]


def hostile_graph() -> graphrt.Graph:
    g = graphrt.Graph("<!--<script>\x00")
    t = g.add_input("x\x02", (None, 4))
    for name in HOSTILE_NAMES:
        t = g.add_node("relu", [t], name=name, source=graphrt.Source(layer=name, type="<ReLU>"))
    g.set_outputs([t])
    return g


def _script_data(page: str) -> str:
    return page.split('<script type="application/json" id="graphrt-data">', 1)[1].split(
        "</script>", 1)[0]


def test_hostile_names_cannot_break_the_page_or_the_pictures(tmp_path):
    """A layer named ``<!--<script>`` used to break the page's own script (only ``</`` was
    escaped); control characters and lone surrogates made the SVG invalid XML and dot fail."""
    view = viz.graph_view(hostile_graph(), "loaded")
    page = viz.to_html(view, viz.to_svg(view, standalone=False))
    data = _script_data(page)
    assert "<" not in data and ">" not in data and "&" not in data
    assert len(page.split("<script")) == 3  # the data block and the page's script, nothing more
    import json

    assert {n["name"] for n in json.loads(data)["nodes"]} >= set(HOSTILE_NAMES)
    bad = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
    for text in (page, viz.to_svg(view), viz.to_dot(view)):
        assert not bad.search(text)
        text.encode("utf-8")
    ET.fromstring(viz.to_svg(view).split("?>", 1)[1])  # well-formed XML
    for ext in (".html", ".svg", ".dot"):
        viz.write(view, tmp_path / f"g{ext}", engine="builtin")
    if shutil.which("dot"):
        svg = viz.run_dot(viz.to_dot(view), "svg").decode("utf-8")
        ET.fromstring(svg[svg.index("<svg"):])
        viz.write(view, tmp_path / "dot.html", engine="dot")
    viz.write(view, tmp_path / "g.png", engine="builtin")
