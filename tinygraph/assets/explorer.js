// The backward explorer: replays backward one op at a time, in the order the engine ran
// it, over graphviz's drawing. tinygraph/explorer.py writes the data this reads: per step,
// where the op is drawn in each drawing and what the Trace recorded for it.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("data").textContent);
  const steps = data.steps;
  const byNumber = new Map(steps.map((s, k) => [s.number, k]));
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");

  // ---- the drawings: each SVG node and edge found by its <title> ------------------------
  const push = (map, key, value) => (map.get(key) || map.set(key, []).get(key)).push(value);
  const titleOf = (g) => g.querySelector(":scope > title").textContent;
  const views = [...document.querySelectorAll(".view")].map((el, i) => {
    const svg = el.querySelector("svg");
    const nodes = new Map();
    const out = new Map();
    const into = new Map();
    for (const g of svg.querySelectorAll("g.node")) nodes.set(titleOf(g), g);
    for (const g of svg.querySelectorAll("g.edge")) {
      const [from, to] = titleOf(g).split("->");
      push(out, from, g);
      push(into, to, g);
    }
    const steps_at = new Map(); // a drawn node's title -> the steps drawn as it (several for a box)
    steps.forEach((s, k) => push(steps_at, s.at[i], k));
    const vb = svg.viewBox.baseVal;
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    const full = { x: vb.x, y: vb.y, w: vb.width, h: vb.height };
    return { ...data.views[i], el, svg, nodes, out, into, steps_at, full, zoom: null };
  });
  const viewOfBox = new Map(views.map((v, i) => [v.box, i]).filter(([box]) => box));

  let step = 0; // the index of the step shown (step K of the page is index K - 1)
  let view = -1; // the drawing shown
  let matched = []; // the steps the search found

  // ---- zoom and pan: a center and a scale (screen pixels per drawing unit) per drawing ----
  const size = () => ({ w: canvas.clientWidth || 1, h: canvas.clientHeight || 1 });
  function apply(v) {
    const { w, h } = size();
    const z = v.zoom;
    v.svg.setAttribute("viewBox", `${z.cx - w / 2 / z.s} ${z.cy - h / 2 / z.s} ${w / z.s} ${h / z.s}`);
  }
  function fit(v) {
    const { w, h } = size();
    const s = Math.min(w / v.full.w, h / v.full.h) * 0.94;
    v.zoom = { cx: v.full.x + v.full.w / 2, cy: v.full.y + v.full.h / 2, s };
    apply(v);
  }
  function toDrawing(v, x, y) {
    const p = v.svg.createSVGPoint();
    p.x = x;
    p.y = y;
    return p.matrixTransform(v.svg.getScreenCTM().inverse());
  }
  function zoomBy(factor, x, y) {
    const v = views[view];
    const r = canvas.getBoundingClientRect();
    const p = toDrawing(v, x ?? r.left + r.width / 2, y ?? r.top + r.height / 2);
    const z = v.zoom;
    const s = Math.min(8, Math.max(0.03, z.s * factor));
    z.cx = p.x + (z.cx - p.x) * (z.s / s);
    z.cy = p.y + (z.cy - p.y) * (z.s / s);
    z.s = s;
    apply(v);
  }
  function box(v, g) {
    // g's bounding box in the drawing's units (graphviz moves its root group by a transform)
    const b = g.getBBox();
    const m = v.svg.getScreenCTM().inverse().multiply(g.getScreenCTM());
    const a = new DOMPoint(b.x, b.y).matrixTransform(m);
    const c = new DOMPoint(b.x + b.width, b.y + b.height).matrixTransform(m);
    return { x: Math.min(a.x, c.x), y: Math.min(a.y, c.y), w: Math.abs(c.x - a.x), h: Math.abs(c.y - a.y) };
  }
  function reveal(v, g) {
    // center g when it is out of the middle of the view; a big drawing starts readable, at g
    const first = !v.zoom;
    if (first) {
      fit(v);
      if (v.zoom.s < 0.9) v.zoom.s = 1.25;
    }
    if (!g) return apply(v);
    const b = box(v, g);
    const { w, h } = size();
    const z = v.zoom;
    const [vw, vh] = [w / z.s, h / z.s];
    const [left, top] = [z.cx - vw / 2 + 0.15 * vw, z.cy - vh / 2 + 0.15 * vh]; // the middle 70%
    const inside = b.x >= left && b.y >= top && b.x + b.w <= left + 0.7 * vw && b.y + b.h <= top + 0.7 * vh;
    if (first || !inside) {
      z.cx = b.x + b.w / 2;
      z.cy = b.y + b.h / 2;
    }
    apply(v);
  }

  // ---- showing a step ------------------------------------------------------------------
  function show(k, { follow = true, hash = true } = {}) {
    step = Math.max(0, Math.min(steps.length - 1, k));
    if (follow) setView(steps[step].home, false);
    paint();
    panel();
    $("counter").textContent = `Step ${step + 1} of ${steps.length}`;
    $("scrub").value = step + 1;
    $("first").disabled = $("prev").disabled = step === 0;
    $("last").disabled = $("next").disabled = step === steps.length - 1;
    document.body.dataset.step = step + 1;
    if (hash && location.hash !== `#step=${step + 1}`) history.replaceState(null, "", `#step=${step + 1}`);
    reveal(views[view], views[view].nodes.get(steps[step].at[view]));
  }

  function setView(i, repaint = true) {
    if (i === view) return;
    views.forEach((v, j) => (v.el.hidden = j !== i));
    view = i;
    document.body.dataset.view = i;
    const v = views[i];
    $("where").innerHTML = v.module
      ? `<b>${esc(v.module)}</b> (${esc(v.kind)}) drawn open <button id="collapse" title="Back to the whole model">collapse</button>`
      : views.length > 1
        ? "Boxes are collapsed modules: click one to open it"
        : "";
    if (repaint) {
      paint();
      reveal(v, v.nodes.get(steps[step].at[i]));
    }
  }

  const MARKS = ["current", "done", "source", "target", "sent", "received", "match"];
  function paint() {
    const v = views[view];
    for (const g of v.svg.querySelectorAll(MARKS.map((m) => "." + m).join(","))) g.classList.remove(...MARKS);
    for (const [title, ks] of v.steps_at) {
      const g = v.nodes.get(title);
      if (!g) continue;
      if (ks.includes(step)) g.classList.add("current");
      else if (ks.every((k) => k < step)) g.classList.add("done");
    }
    for (const k of matched) v.nodes.get(steps[k].at[view])?.classList.add("match");
    const here = steps[step].at[view];
    if (viewOfBox.has(here)) return; // a collapsed box: its edges are many ops' edges
    for (const e of v.out.get(here) || []) {
      e.classList.add("sent"); // backward's edges point from an op to its inputs
      v.nodes.get(titleOf(e).split("->")[1])?.classList.add("target");
    }
    for (const e of v.into.get(here) || []) {
      e.classList.add("received");
      v.nodes.get(titleOf(e).split("->")[0])?.classList.add("source");
    }
  }

  // ---- the panel -----------------------------------------------------------------------
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  const shape = (dims) => `(${dims.join(", ")}${dims.length === 1 ? "," : ""})`;
  function num(x) {
    if (typeof x === "string") return x; // nan, inf, -inf
    if (x === 0) return "0";
    const a = Math.abs(x);
    return a >= 1e4 || a < 1e-3 ? x.toExponential(3) : String(Number(x.toPrecision(4)));
  }
  const link = (number, text) => (byNumber.has(number) ? `<a data-number="${number}">${esc(text)}</a>` : esc(text));
  const bytes = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`);

  function histogram(st) {
    const W = 140;
    const H = 54;
    const top = Math.max(1, ...st.hist);
    const bw = W / st.hist.length;
    const bars = st.hist
      .map((c, i) => `<rect x="${(i * bw + 0.5).toFixed(1)}" y="${(H - (c / top) * H).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${((c / top) * H).toFixed(1)}"><title>${c}</title></rect>`)
      .join("");
    const lo = typeof st.min === "number" ? st.min : 0;
    const hi = typeof st.max === "number" ? st.max : 0;
    const zero = lo < 0 && hi > 0 ? `<line x1="${((-lo / (hi - lo)) * W).toFixed(1)}" x2="${((-lo / (hi - lo)) * W).toFixed(1)}" y1="0" y2="${H}" stroke-dasharray="2 2"/>` : "";
    return `<svg class="hist" width="${W}" height="${H + 12}" viewBox="0 0 ${W} ${H + 12}" aria-label="histogram">${bars}${zero}<line x1="0" x2="${W}" y1="${H + 0.5}" y2="${H + 0.5}"/><text x="0" y="${H + 10}">${num(st.min)}</text><text x="${W}" y="${H + 10}" text-anchor="end">${num(st.max)}</text></svg>`;
  }

  function card(st, heading, kind, note = "") {
    if (!st) return `<div class="grad none ${kind}"><div class="to">${heading}</div>${note || "no grad"}</div>`;
    const bad = st.nonfinite ? " bad" : "";
    const nonfinite = st.nonfinite ? `<dt>NaN/Inf</dt><dd>${st.nonfinite}</dd>` : "";
    return `<div class="grad ${kind}${bad}"><div class="to">${heading}</div><div class="body"><dl>
      <dt>shape</dt><dd data-field="shape">${shape(st.shape)}</dd><dt>dtype</dt><dd data-field="dtype">${esc(st.dtype)}</dd>
      <dt>norm</dt><dd data-field="norm">${num(st.norm)}</dd><dt>min</dt><dd data-field="min">${num(st.min)}</dd>
      <dt>max</dt><dd data-field="max">${num(st.max)}</dd>${nonfinite}</dl>${histogram(st)}</div>${note}</div>`;
  }

  function panel() {
    const s = steps[step];
    const src = data.sources[s.source];
    const many = s.outputs.length > 1;
    const module =
      s.module === null
        ? "outside any module"
        : s.module === ""
          ? `in the model itself <small>(${esc(s.kind)})</small>`
          : `in <code>${esc(s.module)}</code> <small>(${esc(s.kind)})</small>`;
    const from = s.from.length
      ? `the sum of what ${s.from.map((n) => link(n, `#${n} ${steps[byNumber.get(n)]?.name ?? ""}`)).join(", ")} sent`
      : "where backward started: the grad of the output itself";
    const received = s.received
      .map((st, i) => card(st, many ? `grad of output ${i}` : "grad of its output", "received", st ? "" : '<div class="note">none: the engine passes zeros</div>'))
      .join("");
    const inputs = s.inputs
      .map((inp, i) => {
        if (inp.to === null) {
          const what = inp.value === null ? "a tensor that needs no grad" : `<code>${esc(inp.value)}</code>, not a tensor: no grad`;
          return card(null, `input ${i}`, "", what);
        }
        const summed =
          inp.grad && shape(inp.grad.shape) !== shape(inp.shape)
            ? `<div class="note">summed to ${shape(inp.shape)} by the engine: the broadcast undone</div>`
            : "";
        return card(inp.grad, `&#x2192; input ${i}: ${link(inp.step, inp.to)}`, "", summed);
      })
      .join("");
    $("panel").innerHTML = `
      <div class="step-of">Step ${step + 1} of ${steps.length}</div>
      <h1><span class="num">#${s.number}</span> <span class="name">${esc(s.name)}</span></h1>
      <div class="module">${module}</div>
      <div class="note">output ${s.outputs.map(([dims, dtype]) => `${shape(dims)} ${esc(dtype)}`).join(", ")}${
        s.options ? `; called with <code>${esc(s.options)}</code>` : ""
      }</div>
      <h2>Grad received</h2><div class="note">${from}</div>${received}
      <h2>Grads it sent to its inputs</h2>${inputs}
      <h2>Saved for backward</h2><div class="saved">${s.saved ? `${bytes(s.saved)}, freed once this step ran (unless retain_graph)` : "nothing"}</div>
      <h2>Its backward</h2><div class="note">${esc(src.file)}${src.line ? `:${src.line}` : ""}</div>
      <pre class="source">${highlight(src.code)}</pre>
      <div class="help">Backward runs the ops from the output back to the inputs. Each op gets the grad of the
        output with respect to its own output, and its hand-written backward turns it into one grad per input.
        <br><kbd>&#x2190;</kbd> <kbd>&#x2192;</kbd> step, <kbd>Space</kbd> play, <kbd>Home</kbd> <kbd>End</kbd> first and last,
        <kbd>/</kbd> search, <kbd>+</kbd> <kbd>&#x2212;</kbd> <kbd>0</kbd> zoom; drag to pan, wheel to zoom,
        click an op to go to its step.</div>`;
  }

  const PYTHON = /(#[^\n]*)|("""[\s\S]*?"""|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')|\b(def|return|if|elif|else|for|while|in|is|not|and|or|None|True|False|lambda|with|as|raise|yield|import|from|class|try|except|pass)\b|\b(\d+(?:\.\d*)?(?:e[-+]?\d+)?)\b/g;
  function highlight(code) {
    let out = "";
    let last = 0;
    for (const m of code.matchAll(PYTHON)) {
      out += esc(code.slice(last, m.index));
      const kind = m[1] ? "com" : m[2] ? "str" : m[3] ? "kw" : "num";
      out += `<span class="${kind}">${esc(m[0])}</span>`;
      last = m.index + m[0].length;
    }
    return (out + esc(code.slice(last))).replace(/(<span class="kw">def<\/span> )(\w+)/, '$1<span class="def">$2</span>');
  }

  // ---- search: by op name, module path or #number -------------------------------------
  function search(text) {
    const words = text.toLowerCase().split(/\s+/).filter(Boolean);
    matched = words.length
      ? steps.flatMap((s, k) => (words.every((w) => `#${s.number} ${s.name} ${s.module ?? ""}`.toLowerCase().includes(w)) ? [k] : []))
      : [];
    const list = $("matches");
    list.hidden = !words.length;
    list.innerHTML = matched.length
      ? matched
          .slice(0, 200)
          .map((k) => `<li data-step="${k}">#${steps[k].number} ${esc(steps[k].name)} <small>${esc(steps[k].module ?? "")}</small></li>`)
          .join("")
      : "<li>no op or module matches</li>";
    paint();
  }
  function nextMatch() {
    if (!matched.length) return;
    show(matched.find((k) => k > step) ?? matched[0]);
  }

  // ---- play: one step a second, until the last or until stopped -------------------------
  let timer = null;
  function play(on = timer === null) {
    clearInterval(timer);
    timer = null;
    if (on) {
      if (step === steps.length - 1) show(0);
      timer = setInterval(() => (step < steps.length - 1 ? show(step + 1) : play(false)), 1000);
    }
    $("play").classList.toggle("playing", on);
    $("play").setAttribute("aria-label", on ? "pause" : "play");
  }

  // ---- input ---------------------------------------------------------------------------
  $("first").onclick = () => show(0);
  $("prev").onclick = () => show(step - 1);
  $("next").onclick = () => show(step + 1);
  $("last").onclick = () => show(steps.length - 1);
  $("play").onclick = () => play();
  $("scrub").max = steps.length;
  $("scrub").oninput = (e) => show(Number(e.target.value) - 1);
  $("zoom-in").onclick = () => zoomBy(1.25);
  $("zoom-out").onclick = () => zoomBy(0.8);
  $("fit").onclick = () => fit(views[view]);
  $("search").oninput = (e) => search(e.target.value);
  $("search").onkeydown = (e) => {
    if (e.key === "Enter") nextMatch();
    if (e.key === "Escape") {
      e.target.value = "";
      search("");
      e.target.blur();
    }
  };
  $("matches").onclick = (e) => {
    const li = e.target.closest("li[data-step]");
    if (li) show(Number(li.dataset.step));
  };
  $("panel").onclick = (e) => {
    const a = e.target.closest("a[data-number]");
    if (a) show(byNumber.get(Number(a.dataset.number)));
  };
  $("where").onclick = (e) => {
    if (e.target.id === "collapse") setView(0);
  };
  document.addEventListener("keydown", (e) => {
    if (e.target.matches("input") || e.ctrlKey || e.metaKey || e.altKey) return;
    const keys = {
      ArrowRight: () => show(step + 1),
      ArrowLeft: () => show(step - 1),
      Home: () => show(0),
      End: () => show(steps.length - 1),
      "/": () => $("search").focus(),
      " ": () => play(),
      "+": () => zoomBy(1.25),
      "=": () => zoomBy(1.25),
      "-": () => zoomBy(0.8),
      0: () => fit(views[view]),
    };
    if (keys[e.key]) {
      e.preventDefault();
      keys[e.key]();
    }
  });
  document.addEventListener("click", (e) => {
    if (!e.target.closest(".search")) $("matches").hidden = true;
  });

  // a press that does not move is a click on what is under it; one that moves pans
  let press = null;
  canvas.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || e.target.closest(".overlay")) return;
    press = { x: e.clientX, y: e.clientY, target: e.target, moved: false };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!press) return;
    const dx = e.clientX - press.x;
    const dy = e.clientY - press.y;
    if (!press.moved && Math.hypot(dx, dy) < 4) return;
    press.moved = true;
    canvas.classList.add("panning");
    const z = views[view].zoom;
    z.cx -= dx / z.s;
    z.cy -= dy / z.s;
    press.x = e.clientX;
    press.y = e.clientY;
    apply(views[view]);
  });
  canvas.addEventListener("pointerup", () => {
    if (press && !press.moved) clickOn(press.target.closest("g.node"));
    press = null;
    canvas.classList.remove("panning");
  });
  canvas.addEventListener(
    "wheel",
    (e) => {
      e.preventDefault();
      zoomBy(Math.exp(-e.deltaY * 0.0015), e.clientX, e.clientY);
    },
    { passive: false },
  );
  function clickOn(g) {
    if (!g) return;
    const title = titleOf(g);
    if (viewOfBox.has(title)) return setView(viewOfBox.get(title)); // a collapsed module opens
    const ks = views[view].steps_at.get(title);
    if (ks) show(ks[0], { follow: false });
  }

  window.addEventListener("resize", () => apply(views[view]));
  const fromHash = () => Number((/^#step=(\d+)$/.exec(location.hash) || [])[1] || 1) - 1;
  window.addEventListener("hashchange", () => show(fromHash(), { hash: false }));
  show(fromHash());
})();
