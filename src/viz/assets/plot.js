// Run reports: one inline-SVG plot per metric over steps, every run overlaid in its own colour.
// Drag across a plot to zoom every plot to those steps; double-click to zoom out. Hovering shows
// each run's value at the nearest logged step. Below: each run's checkpoints (the best marked),
// throughput, environments and resolved recipe.

const SVGNS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2456c7", "#d1495b", "#2a9d8f", "#e9a23b", "#7b4fd6", "#5c677d", "#00a6c7", "#8a5a44"];
const PW = 560, PH = 240, M = { l: 58, r: 12, t: 22, b: 28 };

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function svgText(parent, attrs, text) {
  const t = svgEl("text", attrs);
  t.textContent = text;
  parent.append(t);
  return t;
}

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map(s => s * mag).find(s => s >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

// Min and max without spreading (a long run has more points than a call takes arguments).
function extent(xs, lo, hi) {
  for (const x of xs) { if (x < lo) lo = x; if (x > hi) hi = x; }
  return [lo, hi];
}

function renderReport(app, data) {
  app.append(el("header", {}, el("h1", { text: data.title }),
    el("div", { class: "meta", text: data.runs.length + " run(s) \u00b7 drag across a plot to zoom, double-click to zoom out" })));
  const main = el("div", { id: "tree" });
  app.append(main);
  const legend = el("div", { class: "legend" });
  data.runs.forEach((r, i) => legend.append(el("span", {}, el("span", { class: "swatch", style: "background:" + PALETTE[i % PALETTE.length] }), r.name + " (" + r.dir + ")")));
  main.append(legend);
  const steps = data.runs.flatMap(r => Object.values(r.series).flatMap(s => s.map(p => p[0])));
  const full = extent(steps, 0, 1);
  let domain = full.slice();
  const plots = el("div", { class: "plots" });
  main.append(plots);
  const redraws = [];
  for (const metric of data.metrics) {
    const svg = svgEl("svg", { class: "plot", width: PW, height: PH, "data-metric": metric });
    plots.append(svg);
    redraws.push(() => drawPlot(svg, metric));
  }
  const tip = el("div", { class: "tip" });
  main.append(tip);
  function redraw() { redraws.forEach(f => f()); }
  function drawPlot(svg, metric) {
    svg.textContent = "";
    svg.setAttribute("data-x0", domain[0]); svg.setAttribute("data-x1", domain[1]);
    const lines = data.runs.map(r => (r.series[metric] || []).filter(p => p[0] >= domain[0] && p[0] <= domain[1]));
    const ys = lines.flat().map(p => p[1]);
    let [y0, y1] = ys.length ? extent(ys, Infinity, -Infinity) : [0, 1];
    if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
    const sx = x => M.l + (x - domain[0]) / ((domain[1] - domain[0]) || 1) * (PW - M.l - M.r);
    const sy = y => PH - M.b - (y - y0) / (y1 - y0) * (PH - M.t - M.b);
    svgText(svg, { x: M.l, y: 14, "font-size": 12, "font-weight": 600, fill: "#1d2330" }, metric);
    for (const t of niceTicks(y0, y1, 4)) {
      svg.append(svgEl("line", { x1: M.l, x2: PW - M.r, y1: sy(t), y2: sy(t), stroke: "#eef0f4" }));
      svgText(svg, { x: M.l - 4, y: sy(t) + 4, "text-anchor": "end", "font-size": 10, fill: "#6b7385" }, fmtValue(t));
    }
    for (const t of niceTicks(domain[0], domain[1], 6)) {
      svgText(svg, { x: sx(t), y: PH - 10, "text-anchor": "middle", "font-size": 10, fill: "#6b7385" }, String(t));
    }
    svg.append(svgEl("rect", { x: M.l, y: M.t, width: PW - M.l - M.r, height: PH - M.t - M.b, fill: "none", stroke: "#c7ccd6" }));
    lines.forEach((pts, i) => {
      if (!pts.length) return;
      const colour = PALETTE[i % PALETTE.length];
      svg.append(svgEl("polyline", { fill: "none", stroke: colour, "stroke-width": 1.6, "data-run": i,
        "data-n": pts.length, points: pts.map(p => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ") }));
      if (pts.length <= 40) pts.forEach(p => svg.append(svgEl("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.2, fill: colour })));
    });
    const hit = svgEl("rect", { x: M.l, y: M.t, width: PW - M.l - M.r, height: PH - M.t - M.b, fill: "transparent", class: "hit" });
    const brush = svgEl("rect", { y: M.t, height: PH - M.t - M.b, fill: "rgba(36,86,199,0.15)", width: 0, class: "brush" });
    svg.append(brush, hit);
    const stepAt = e => { const b = svg.getBoundingClientRect(); return domain[0] + (e.clientX - b.left - M.l) / (PW - M.l - M.r) * (domain[1] - domain[0]); };
    let from = null;
    hit.addEventListener("mousedown", e => { from = e.clientX; });
    hit.addEventListener("mousemove", e => {
      const b = svg.getBoundingClientRect();
      if (from != null) {
        const a = Math.min(from, e.clientX) - b.left, w = Math.abs(e.clientX - from);
        brush.setAttribute("x", a); brush.setAttribute("width", w);
      }
      const s = stepAt(e);
      const rows = data.runs.map((r, i) => {
        const pts = r.series[metric] || [];
        if (!pts.length) return null;
        const near = pts.reduce((a, p) => (Math.abs(p[0] - s) < Math.abs(a[0] - s) ? p : a));
        return r.name + "  step " + near[0] + ": " + fmtValue(near[1]);
      }).filter(x => x);
      tip.textContent = metric + "\n" + rows.join("\n");
      tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px"; tip.style.display = "block";
    });
    hit.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    hit.addEventListener("mouseup", e => {
      if (from == null) return;
      const b = svg.getBoundingClientRect();
      const xs = [from, e.clientX].map(c => domain[0] + (c - b.left - M.l) / (PW - M.l - M.r) * (domain[1] - domain[0]));
      from = null;
      if (Math.abs(xs[1] - xs[0]) > (domain[1] - domain[0]) * 0.01) {
        domain = [Math.max(full[0], Math.min(...xs)), Math.min(full[1], Math.max(...xs))];
        redraw();
      } else brush.setAttribute("width", 0);
    });
    hit.addEventListener("dblclick", () => { domain = full.slice(); redraw(); });
  }
  redraw();
  data.runs.forEach((r, i) => main.append(runSection(r, i)));
}

function runSection(r, i) {
  const sec = el("div", { class: "section run", "data-run": i });
  sec.append(el("h2", { text: r.name }), el("div", { class: "meta mono", text: r.dir + " \u00b7 " + r.state + " \u00b7 step " + r.steps_done + " of " + (r.steps_total ?? "?") }));
  const ck = el("table", { class: "info checkpoints" });
  const keys = [...new Set(r.checkpoints.flatMap(c => Object.keys(c.metrics)))].sort();
  ck.append(el("tr", {}, el("th", { text: "checkpoint" }), ...keys.map(k => el("th", { text: k })), el("th", { text: "" })));
  for (const c of r.checkpoints) {
    ck.append(el("tr", { class: c.best ? "best" : "" }, el("td", { class: "mono", text: "step-" + c.step }),
      ...keys.map(k => el("td", { class: "mono", text: c.metrics[k] == null ? "" : fmtValue(c.metrics[k]) })),
      el("td", { text: c.best ? "best " + (r.metric || "") : "" })));
  }
  sec.append(el("h3", { text: "checkpoints" }), ck);
  if (r.throughput) {
    sec.append(el("div", { class: "mono", text: "throughput: " + fmtValue(r.throughput.mean_tokens_per_s) + " tokens/s mean, " + fmtValue(r.throughput.last_tokens_per_s) + " last" }));
  }
  if (r.environment.length) {
    const env = el("table", { class: "info environment" });
    env.append(el("tr", {}, ...["started", "from step", "pzt", "libtorch", "device", "threads", "settings"].map(h => el("th", { text: h }))));
    for (const e of r.environment) {
      env.append(el("tr", {}, ...[new Date(e.time * 1000).toISOString(), e.start_step, e.pzt, e.libtorch, e.device, e.threads, Object.entries(e.env || {}).map(([k, v]) => k + "=" + v).join(" ")].map(v => el("td", { class: "mono", text: String(v) }))));
    }
    sec.append(el("h3", { text: "environment" }), env);
  }
  if (r.recipe) {
    const d = el("details", {}, el("summary", { text: "resolved recipe" }), el("pre", { class: "recipe", text: r.recipe }));
    sec.append(d);
  }
  return sec;
}
