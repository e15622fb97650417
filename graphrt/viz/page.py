"""The HTML page's stylesheet and script (inlined by :mod:`graphrt.viz.html`; no network).

The script reads the view's JSON, wires clicks on ``g.node``/``g.tensor`` to the side panel, runs
the search box (exact node name, then exact source-layer name, then substring), zooms (``fit``
shows the whole graph, centred), keeps an overview of the whole graph with the visible part framed
whenever the graph does not fit the canvas (click or drag it to move there), outlines the selected
node and every search match (``g.mark`` rectangles drawn over the graph, the same for the built-in
and Graphviz's SVG), and selects ``#node=NAME`` on load. It exposes
``window.graphrt = {data, select, find, search, fit, zoom}`` and sets ``document.body.dataset.ready``
when wired, for tests and for scripting the page.
"""
import json

from .svg import COLORS

_KEYS = "\n".join(f".key.{k} {{ background: {f}; border-color: {s}; }}" for k, (f, s) in COLORS.items())

PAGE_CSS = """
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; font: 13px 'DejaVu Sans', Verdana, sans-serif; color: #1b1b1b; }
body { display: flex; flex-direction: column; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 18px; padding: 8px 14px;
         border-bottom: 1px solid #ddd; background: #fafbfc; }
header .stage { background: #4a6fa5; color: #fff; border-radius: 3px; padding: 1px 6px; font-size: 11px; }
header .facts { color: #555; }
header .tools { display: flex; gap: 4px; align-items: center; }
#search { width: 260px; padding: 4px 6px; font: inherit; }
#search-status { color: #666; min-width: 70px; font-size: 12px; }
button { font: inherit; padding: 2px 9px; cursor: pointer; }
.legend .key { display: inline-block; border: 1px solid; border-radius: 3px; padding: 0 6px;
               margin-right: 4px; font-size: 11px; }
#orphans { flex-basis: 100%; color: #777; font-size: 12px; }
main { flex: 1; display: flex; min-height: 0; position: relative; }
#canvas { flex: 1; overflow: auto; background: #fff; position: relative; }
#canvas svg { display: block; }
#overview { position: absolute; left: 10px; bottom: 10px; background: rgba(255, 255, 255, 0.94);
            border: 1px solid #b9c0ca; border-radius: 4px; box-shadow: 0 1px 4px rgba(0, 0, 0, 0.18);
            padding: 4px; cursor: crosshair; z-index: 2; }
#overview[hidden] { display: none; }
#overview .caption { font-size: 10px; color: #666; margin: 0 0 2px 2px; }
#overview svg { display: block; }
#overview .frame { fill: rgba(230, 81, 0, 0.10); stroke: #e65100; stroke-width: 1.5;
                   vector-effect: non-scaling-stroke; }
#panel { width: 400px; overflow-y: auto; overflow-x: hidden; border-left: 1px solid #ddd;
         padding: 10px 14px; background: #fcfcfd; overflow-wrap: anywhere; }
#panel h2 { font-size: 15px; margin: 2px 0 6px; }
#panel h3 { font-size: 12px; font-weight: bold; color: #666; margin: 14px 0 4px; letter-spacing: 0.02em; }
#panel table { border-collapse: collapse; width: 100%; font-size: 12px; table-layout: fixed; }
#panel td, #panel th { text-align: left; padding: 2px 4px; border-bottom: 1px solid #eee;
                       vertical-align: top; overflow-wrap: anywhere; }
#panel th { color: #666; font-weight: normal; }
#panel .badge { display: inline-block; border: 1px solid; border-radius: 3px; padding: 0 6px; font-size: 11px; }
#panel a { color: #2a5db0; cursor: pointer; text-decoration: underline; }
#panel .hint { color: #777; }
#panel .tensor-row { padding: 3px 0; border-bottom: 1px solid #eee; font-size: 12px; }
#panel .tensor-row .shape { font-family: 'DejaVu Sans Mono', monospace; }
#panel .tensor-row .arena { color: #444; }
g.node, g.tensor { cursor: pointer; }
g.node:hover .box, g.tensor:hover .box { stroke-width: 2.4; }
g.marks { pointer-events: none; }
rect.mark-selected { fill: none; stroke: #e65100; stroke-width: 4; }
rect.mark-halo { fill: none; stroke: #ffb74d; stroke-width: 10; stroke-opacity: 0.55; }
rect.mark-hit { fill: none; stroke: #f9a825; stroke-width: 3; stroke-dasharray: 7 4; }
""" + _KEYS

PAGE_JS = r"""
(function () {
  'use strict';
  const data = JSON.parse(document.getElementById('graphrt-data').textContent);
  const canvas = document.getElementById('canvas');
  const panel = document.getElementById('panel');
  const svg = canvas.querySelector('svg');
  const NS = 'http://www.w3.org/2000/svg';
  const KIND_COLORS = __KIND_COLORS__;
  const byId = {}, byName = {}, byLayer = {};
  for (const n of data.nodes) {
    byId[n.id] = n;
    const real = n.kind !== 'input' && n.kind !== 'output';
    if (real || !(n.name in byName)) byName[n.name] = n.id;
    for (const l of [].concat(n.members, n.elided, n.slices.map(s => s.layer)))
      if (!(l in byLayer)) byLayer[l] = n.id;
  }
  const esc = s => String(s).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]));
  const mib = b => b >= 1048576 ? (b / 1048576).toFixed(2) + ' MiB' : b >= 1024 ? (b / 1024).toFixed(2) + ' KiB' : b + ' B';
  const link = name => name in byName ? `<a data-go="${esc(byName[name])}">${esc(name)}</a>` : esc(name);
  const row = cells => '<tr>' + cells.map(c => `<td>${c}</td>`).join('') + '</tr>';
  const table = (head, rows) => rows.length ? '<table><tr>' + head.map(h => `<th>${h}</th>`).join('') +
      '</tr>' + rows.join('') + '</table>' : '<p class="hint">none</p>';

  // ---- geometry: boxes in the root SVG's user space (the same for both layouts, at any zoom)
  const vb = svg.viewBox && svg.viewBox.baseVal && svg.viewBox.baseVal.width ? svg.viewBox.baseVal
      : {x: 0, y: 0, width: svg.getBBox().width, height: svg.getBBox().height};
  function userBox(rect) {
    const m = svg.getScreenCTM().inverse();
    const p = new DOMPoint(rect.left, rect.top).matrixTransform(m);
    const q = new DOMPoint(rect.right, rect.bottom).matrixTransform(m);
    return {x: p.x, y: p.y, width: q.x - p.x, height: q.y - p.y};
  }

  // ---- marks: the selected node and the search matches outlined over the graph
  const marks = document.createElementNS(NS, 'g');
  marks.setAttribute('class', 'marks');
  svg.appendChild(marks);
  function mark(el, kind) {
    const b = userBox(el.getBoundingClientRect()), pad = kind === 'hit' ? 4 : 6;
    for (const cls of kind === 'selected' ? ['mark-halo', 'mark-selected'] : ['mark-hit']) {
      const r = document.createElementNS(NS, 'rect');
      r.setAttribute('class', 'mark ' + cls);
      r.setAttribute('data-node', el.id);
      r.setAttribute('x', b.x - pad);
      r.setAttribute('y', b.y - pad);
      r.setAttribute('width', b.width + 2 * pad);
      r.setAttribute('height', b.height + 2 * pad);
      r.setAttribute('rx', 8);
      marks.appendChild(r);
    }
  }
  const unmark = kind => marks.querySelectorAll(
      kind === 'hit' ? 'rect.mark-hit' : 'rect.mark-selected, rect.mark-halo').forEach(r => r.remove());

  // ---- zoom: the viewBox stays, the drawn size changes; a graph smaller than the canvas is centred
  const FIT_MARGIN = 12;
  let scale = 1;
  function zoom(s) {
    scale = Math.max(0.02, Math.min(4, s));
    const w = vb.width * scale, h = vb.height * scale;
    svg.setAttribute('width', w);
    svg.setAttribute('height', h);
    svg.style.marginLeft = svg.style.marginTop = '0px';
    svg.style.marginLeft = Math.max(0, (canvas.clientWidth - w) / 2) + 'px';
    svg.style.marginTop = Math.max(0, (canvas.clientHeight - h) / 2) + 'px';
    overview.update();
    return scale;
  }
  function fit() {  // the whole graph in the canvas, centred (twice: scroll bars go once it fits)
    for (let i = 0; i < 2; i++)
      zoom(Math.min((canvas.clientWidth - 2 * FIT_MARGIN) / vb.width,
                    (canvas.clientHeight - 2 * FIT_MARGIN) / vb.height));
    canvas.scrollLeft = canvas.scrollTop = 0;
    overview.update();
  }

  // ---- the overview: the whole graph small, the visible part framed; click or drag to move there
  const overview = (() => {
    const box = document.getElementById('overview');
    const map = box.querySelector('svg');
    const k = Math.min(180 / vb.width, 260 / vb.height);
    map.setAttribute('width', Math.max(vb.width * k, 40));
    map.setAttribute('height', Math.max(vb.height * k, 40));
    map.setAttribute('viewBox', `${vb.x} ${vb.y} ${vb.width} ${vb.height}`);
    for (const el of svg.querySelectorAll('g.node, g.tensor')) {
      const b = userBox(el.getBoundingClientRect()), n = byId[el.id];
      const r = document.createElementNS(NS, 'rect');
      for (const [a, v] of Object.entries({x: b.x, y: b.y, width: b.width, height: b.height}))
        r.setAttribute(a, v);
      r.setAttribute('fill', n ? KIND_COLORS[n.kind] : '#888');
      r.setAttribute('data-node', el.id);
      map.appendChild(r);
    }
    const frame = document.createElementNS(NS, 'rect');
    frame.setAttribute('class', 'frame');
    map.appendChild(frame);
    function update() {
      box.hidden = vb.width * scale <= canvas.clientWidth + 1 && vb.height * scale <= canvas.clientHeight + 1;
      const v = userBox(canvas.getBoundingClientRect());
      const x = Math.max(v.x, vb.x), y = Math.max(v.y, vb.y);
      frame.setAttribute('x', x);
      frame.setAttribute('y', y);
      frame.setAttribute('width', Math.max(0, Math.min(v.x + v.width, vb.x + vb.width) - x));
      frame.setAttribute('height', Math.max(0, Math.min(v.y + v.height, vb.y + vb.height) - y));
    }
    function moveTo(e) {  // centre the canvas on the graph point under the pointer
      const p = new DOMPoint(e.clientX, e.clientY).matrixTransform(map.getScreenCTM().inverse());
      const s = p.matrixTransform(svg.getScreenCTM()), c = canvas.getBoundingClientRect();
      canvas.scrollLeft += s.x - (c.left + canvas.clientWidth / 2);
      canvas.scrollTop += s.y - (c.top + canvas.clientHeight / 2);
    }
    map.addEventListener('pointerdown', e => { moveTo(e); map.setPointerCapture(e.pointerId); });
    map.addEventListener('pointermove', e => { if (e.buttons & 1) moveTo(e); });
    canvas.addEventListener('scroll', update);
    return {update};
  })();

  zoom(1);
  window.addEventListener('resize', () => zoom(scale));
  document.getElementById('zoom-in').onclick = () => zoom(scale * 1.25);
  document.getElementById('zoom-out').onclick = () => zoom(scale / 1.25);
  document.getElementById('zoom-fit').onclick = fit;
  canvas.addEventListener('wheel', e => {
    if (!e.ctrlKey) return;
    e.preventDefault();
    zoom(scale * (e.deltaY < 0 ? 1.1 : 1 / 1.1));
  }, {passive: false});

  function arenaCell(a) {
    if (!a) return '<span class="hint">not in the arena</span>';
    let s = `offset ${a.offset} (${mib(a.offset)}), ${mib(a.size)}, steps ${a.steps[0]}–${a.steps[1]}`;
    if (a.slice) s += `<br>slice [${a.slice.start}:${a.slice.stop}] of axis ${a.slice.axis} of ${esc(a.buffer)}`;
    else if (a.buffer) s += `<br>buffer ${esc(a.buffer)} (${mib(a.block_size)})`;
    if (a.slots) s += `<br>prefetch slots at ${a.slots.join(', ')}`;
    return s;
  }

  const tensorRow = (t, extra) => `<div class="tensor-row"><b>${esc(t.name)}</b><br>` +
      `<span class="shape">${esc(t.shape)}</span> ${esc(t.dtype)}${extra}</div>`;

  function render(n) {
    const h = [`<h2>${esc(n.name)}</h2>`, `<div><span class="badge">${esc(n.kind)}</span> op <b>${esc(n.op)}</b>`];
    if (n.device) h.push(` on <b>${esc(n.device)}</b>`);
    if (n.free) h.push(' · free: its output is a view in the arena, no kernel runs');
    h.push('</div>');
    if (n.source && n.source.type) h.push(`<div class="hint">source: ${esc(n.source.type)} ${esc(n.source.layer || '')}` +
        (n.source.file ? ` — ${esc(n.source.file)}${n.source.line ? ':' + n.source.line : ''}` : '') + '</div>');
    if (n.time_ms !== null && n.time_ms !== undefined) {
      const pct = data.info.step_ms ? ` (${(100 * n.time_ms / data.info.step_ms).toFixed(1)}% of the step)` : '';
      h.push(`<h3>Measured time</h3><div class="time">${n.time_ms.toFixed(4)} ms${pct}</div>`);
    }
    if (n.members.length) h.push('<h3>Fused source layers</h3>' + n.members.map(esc).join('<br>'));
    if (n.elided.length) h.push('<h3>Removed layers folded here</h3>' + n.elided.map(esc).join('<br>'));
    if (n.slices.length) h.push('<h3>Aliased slices</h3>' + table(['tensor', 'range'],
        n.slices.map(s => row([link(s.layer), `[${s.start}:${s.stop}]`]))));
    if (Object.keys(n.attrs).length) h.push('<h3>Attributes</h3>' + table(['name', 'value'],
        Object.entries(n.attrs).map(([k, v]) => row([esc(k), esc(v)]))));
    if (n.inputs.length) h.push('<h3>Inputs</h3>' + n.inputs.map(t => tensorRow(t,
        ' · from ' + (t.from === 'param' || t.from === 'input' ? t.from : link(t.from)))).join(''));
    if (n.outputs.length) h.push('<h3>Outputs</h3>' + n.outputs.map(t => tensorRow(t,
        ` · ${mib(t.bytes)}<div class="arena">arena ${arenaCell(t.arena)}</div>`)).join(''));
    if (n.params.length) {
      const total = n.params.reduce((s, p) => s + p.bytes, 0);
      h.push(`<h3>Parameters (${mib(total)})</h3>` + table(['name', 'shape', 'count'],
        n.params.map(p => row([esc(p.name), '(' + p.shape.join(', ') + ')', p.count.toLocaleString('en')]))));
    }
    if (n.workspace) h.push(`<h3>Workspace</h3>offset ${n.workspace.offset}, ${mib(n.workspace.size)}`);
    if (n.flops) h.push(`<h3>Cost</h3>${(n.flops / 1e6).toFixed(3)} MFLOP at batch ${data.info.batch}`);
    panel.innerHTML = h.join('');
  }

  let selected = null;
  function select(id, scroll = true) {
    const n = byId[id];
    const el = document.getElementById(id);
    if (!n || !el) return false;
    if (selected) selected.classList.remove('selected');
    selected = el;
    el.classList.add('selected');
    unmark('selected');
    mark(el, 'selected');
    render(n);
    window.graphrt.selected = n.name;
    if (scroll) {
      const r = el.getBoundingClientRect(), c = canvas.getBoundingClientRect();
      canvas.scrollLeft += r.left + r.width / 2 - (c.left + c.width / 2);
      canvas.scrollTop += r.top + r.height / 2 - (c.top + c.height / 2);
    }
    return true;
  }

  function find(q) {
    q = q.trim();
    if (!q) return [];
    if (q in byName) return [byName[q]];
    if (q in byLayer) return [byLayer[q]];
    const low = q.toLowerCase();
    return data.nodes.filter(n => [n.name].concat(n.members, n.elided)
        .some(s => s.toLowerCase().includes(low))).map(n => n.id);
  }

  const box = document.getElementById('search');
  const status = document.getElementById('search-status');
  document.getElementById('names').innerHTML = data.nodes.map(n => `<option value="${esc(n.name)}">`).join('');
  let hits = [], hit = 0;
  function search(q) {
    hits = find(q);
    hit = 0;
    status.textContent = q.trim() ? (hits.length ? `1 of ${hits.length}` : 'no match') : '';
    unmark('hit');
    for (const id of hits) mark(document.getElementById(id), 'hit');
    return hits.length ? select(hits[0]) : false;
  }
  box.addEventListener('keydown', e => {
    if (e.key !== 'Enter') return;
    if (hits.length > 1 && box.dataset.last === box.value) {  // Enter again: the next match
      hit = (hit + 1) % hits.length;
      status.textContent = `${hit + 1} of ${hits.length}`;
      select(hits[hit]);
    } else {
      search(box.value);
    }
    box.dataset.last = box.value;
  });
  box.addEventListener('input', () => {  // an edited query: the old count or "no match" no longer holds
    status.textContent = '';
    if (!box.value.trim()) { hits = []; unmark('hit'); box.dataset.last = ''; }
  });
  box.addEventListener('change', () => { if (box.value in byName) { search(box.value); box.dataset.last = box.value; } });

  svg.addEventListener('click', e => {
    const g = e.target.closest('g.node, g.tensor');
    if (g) select(g.id, false);
  });
  panel.addEventListener('click', e => {
    const a = e.target.closest('a[data-go]');
    if (a) select(a.dataset.go);
  });

  window.graphrt = {data, select: name => name in byName && select(byName[name]), find, search, fit, zoom,
                    get scale() { return scale; }, selected: null};
  const m = /node=([^&]+)/.exec(location.hash);
  if (m) { const name = decodeURIComponent(m[1]); box.value = name; search(name); }
  document.body.dataset.ready = '1';
})();
""".replace("__KIND_COLORS__", json.dumps({kind: stroke for kind, (_, stroke) in COLORS.items()}))
