// Run reports: a headline table (each run's final and best loss and eval metrics), then one
// inline-SVG plot per metric over steps, every run overlaid in its own colour, the plots sharing
// the page's width. Each plot has axis titles and a log-scale toggle (on by default for losses
// and perplexities). Drag across a plot to zoom every plot to those steps; double-click to zoom
// out. Hovering shows each run's value at the nearest logged step. Below: each run's checkpoints
// (the best marked), throughput, environments and resolved recipe.

const SVGNS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2456c7", "#d1495b", "#2a9d8f", "#e9a23b", "#7b4fd6", "#5c677d", "#00a6c7", "#8a5a44"];
const PH = 260, PLOT_TICK_PX = 10, PLOT_TITLE_PX = 11;

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

// Round values from lo to hi, about n of them (at least 3 where the range allows), at least
// minStep apart.
function niceTicks(lo, hi, n, minStep) {
  if (!(hi > lo)) return [lo];
  let out = [];
  for (let k = n; k <= 64 * n; k *= 2) {
    const step0 = Math.max((hi - lo) / k, minStep || 0), mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 5, 10].map(s => s * mag).find(s => s >= step0 * (1 - 1e-9)) || step0;
    out = [];
    for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    if (out.length >= Math.min(3, n) || step0 === minStep) break;
  }
  return out;
}

// Ticks of a log axis from 10^l0 to 10^l1: 1, 2, 5 (or only 1) times powers of ten when the
// range spans decades, round linear values inside it otherwise.
function logTicks(l0, l1) {
  const lo = Math.pow(10, l0), hi = Math.pow(10, l1);
  for (const ms of [[1, 2, 5], [1]]) {
    const out = [];
    for (let e = Math.floor(l0); e <= Math.ceil(l1); e++) {
      for (const m of ms) { const v = Number((m * Math.pow(10, e)).toPrecision(12)); if (v >= lo && v <= hi) out.push(v); }
    }
    if (out.length >= 2 && out.length <= 8) return out;
    if (out.length > 8 && ms.length === 1) return out.filter((_, i) => i % Math.ceil(out.length / 8) === 0);
  }
  return niceTicks(lo, hi, 5).filter(v => v > 0);
}

// Tick labels: as short as they can be while telling every tick apart and staying within `tol`
// of its value, in exponent form only for very large or small numbers.
function fmtTicks(ticks, tol) {
  const fmt = (v, p) => {
    if (v === 0) return "0";
    const a = Math.abs(v), r = Number(v.toPrecision(p));
    return a >= 1e6 || a < 1e-4 ? r.toExponential().replace("e+", "e") : String(r);
  };
  let labels = [];
  for (let p = 3; p <= 15; p++) {
    labels = ticks.map(v => fmt(v, p));
    if (new Set(labels).size === labels.length && labels.every((l, i) => Math.abs(Number(l) - ticks[i]) <= tol)) break;
  }
  return labels;
}

// Min and max without spreading (a long run has more points than a call takes arguments).
function extent(xs, lo, hi) {
  for (const x of xs) { if (x < lo) lo = x; if (x > hi) hi = x; }
  return [lo, hi];
}

// Losses and perplexities are drawn on a log scale unless told otherwise.
function logByDefault(metric) {
  return /loss$|perplexity/.test(metric);
}

function headlineTable(data) {
  const metrics = data.metrics.filter(m => data.runs.some(r => (r.headline || []).some(h => h.metric === m)));
  const t = el("table", { class: "info headline" });
  const head = el("tr", {}, el("th", { text: "run" }), el("th", { text: "state" }));
  for (const m of metrics) {
    const max = data.runs.map(r => (r.headline || []).find(h => h.metric === m)).find(h => h);
    head.append(el("th", { "data-metric": m, title: max.maximize ? "higher is better" : "lower is better",
      text: m + (max.maximize ? " \u2191" : " \u2193") }));
  }
  t.append(head);
  data.runs.forEach((r, i) => {
    const row = el("tr", { "data-run": i },
      el("td", {}, el("span", { class: "swatch", style: "background:" + PALETTE[i % PALETTE.length] }), el("b", { text: r.name })),
      el("td", { class: "dim", text: r.state + " \u00b7 step " + r.steps_done + " of " + (r.steps_total ?? "?") }));
    for (const m of metrics) {
      const h = (r.headline || []).find(x => x.metric === m);
      const td = el("td", { "data-metric": m });
      if (h) {
        td.append(el("div", {}, el("span", { class: "final mono", text: fmtValue(h.final.value) }),
          el("span", { class: "at", text: " final \u00b7 step " + h.final.step })),
          el("div", {}, el("span", { class: "best mono", text: fmtValue(h.best.value) }),
            el("span", { class: "at", text: " best \u00b7 step " + h.best.step + (h.key ? " \u00b7 ranks checkpoints" : "") })));
      }
      row.append(td);
    }
    t.append(row);
  });
  return t;
}

function renderReport(app, data) {
  app.append(el("header", {}, el("h1", { text: data.title }),
    el("div", { class: "meta", text: data.runs.length + " run(s) \u00b7 drag across a plot to zoom, double-click to zoom out, tick \u201clog\u201d for a log scale" })));
  const main = el("div", { id: "report" });
  app.append(main);
  const legend = el("div", { class: "legend" });
  data.runs.forEach((r, i) => legend.append(el("span", {}, el("span", { class: "swatch", style: "background:" + PALETTE[i % PALETTE.length] }), r.name + " (" + r.dir + ")")));
  main.append(legend);
  if (data.runs.some(r => (r.headline || []).length)) main.append(el("div", { class: "headline-wrap" }, headlineTable(data)));
  const steps = data.runs.flatMap(r => Object.values(r.series).flatMap(s => s.map(p => p[0])));
  const view = { full: extent(steps, 0, 1) };
  view.domain = view.full.slice();
  const plots = el("div", { class: "plots" });
  main.append(plots);
  const tip = el("div", { class: "tip" });
  const redraws = [];
  view.redraw = () => redraws.forEach(f => f());
  for (const metric of data.metrics) {
    const box = el("figure", { class: "plot-box", "data-metric": metric });
    const svg = svgEl("svg", { class: "plot", height: PH, "data-metric": metric });
    const values = data.runs.flatMap(r => (r.series[metric] || []).map(p => p[1]));
    const positive = values.length > 0 && values.every(v => v > 0);
    const log = el("input", { type: "checkbox", "data-metric": metric });
    log.checked = positive && logByDefault(metric);
    log.disabled = !positive;
    const draw = () => drawPlot(svg, metric, data, view, tip, log.checked);
    log.addEventListener("change", draw);
    box.append(svg, el("label", { class: "logscale", title: positive ? "log scale" : "a log scale needs values above 0" }, log, "log"));
    plots.append(box);
    redraws.push(draw);
  }
  main.append(tip);
  view.redraw();
  let pending = false;
  window.addEventListener("resize", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; view.redraw(); });
  });
  data.runs.forEach((r, i) => main.append(runSection(r, i)));
}

// The width of `text` at `size` pixels (and `weight`) in `svg`.
function textWidth(svg, text, size, weight) {
  const t = svgText(svg, { "font-size": size, "font-weight": weight || 400, visibility: "hidden" }, text);
  const w = t.getBBox().width;
  t.remove();
  return w;
}

// The plot's frame: y ticks (value space and labels) and the margins that fit every label.
function plotFrame(svg, lines, view, log) {
  const W = Math.max(320, Math.floor(svg.parentNode.clientWidth));
  const f = log ? Math.log10 : (y => y);
  const ys = lines.flat().map(p => f(p[1]));
  let [y0, y1] = ys.length ? extent(ys, Infinity, -Infinity) : [0, 1];
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || (log ? 0.05 : 1); y1 += Math.abs(y1) * 0.1 || (log ? 0.05 : 1); }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const yt = log ? logTicks(y0, y1) : niceTicks(y0, y1, 4);
  const ylabels = fmtTicks(yt, log ? Math.min(...yt) * 1e-3 : (y1 - y0) / 1000);
  const yw = Math.max(0, ...ylabels.map(s => textWidth(svg, s, PLOT_TICK_PX)));
  const M = { l: Math.ceil(yw) + 30, t: 26, b: 42 };
  const [d0, d1] = view.domain;
  const probe = niceTicks(d0, d1, Math.max(2, Math.floor((W - M.l) / 90)), 1);
  const xlabels = fmtTicks(probe, (d1 - d0) / 1000), last = xlabels[xlabels.length - 1];
  M.r = Math.max(14, Math.ceil(textWidth(svg, last, PLOT_TICK_PX) / 2) + 6);
  const sx = x => M.l + (x - d0) / ((d1 - d0) || 1) * (W - M.l - M.r);
  const sy = y => PH - M.b - (f(y) - y0) / (y1 - y0) * (PH - M.t - M.b);
  return { W, M, sx, sy, yt, ylabels, xt: probe, xlabels, inside: y => f(y) >= y0 - 1e-9 && f(y) <= y1 + 1e-9 };
}

// `text + suffix` when it fits in `room` pixels at `size`, else `text` cut short with an ellipsis.
function fitText(svg, text, suffix, room, size, weight) {
  if (textWidth(svg, text + suffix, size, weight) <= room) return text + suffix;
  let chars = [...text];
  while (chars.length > 1 && textWidth(svg, chars.join("") + "\u2026", size, weight) > room) chars = chars.slice(0, -1);
  return chars.join("") + (chars.length < [...text].length ? "\u2026" : "");
}

function drawAxes(svg, metric, fr, log) {
  const { W, M, sx, sy } = fr;
  // The title leaves room for the log toggle at the top right.
  const title = svgText(svg, { x: M.l, y: 16, "font-size": 12, "font-weight": 600, fill: "#1d2330", class: "plot-title" }, metric);
  title.textContent = fitText(svg, metric, "", W - M.l - 70, 12, 600);
  title.append(svgEl("title"));
  title.lastChild.textContent = metric;
  fr.yt.forEach((t, i) => {
    if (!fr.inside(t)) return;
    svg.append(svgEl("line", { x1: M.l, x2: W - M.r, y1: sy(t), y2: sy(t), stroke: "#eef0f4" }));
    svgText(svg, { x: M.l - 5, y: sy(t) + 3.5, "text-anchor": "end", "font-size": PLOT_TICK_PX, fill: "#6b7385", class: "tick", "data-axis": "y" }, fr.ylabels[i]);
  });
  fr.xt.forEach((t, i) => {
    svgText(svg, { x: sx(t), y: PH - M.b + 14, "text-anchor": "middle", "font-size": PLOT_TICK_PX, fill: "#6b7385", class: "tick", "data-axis": "x" }, fr.xlabels[i]);
  });
  svgText(svg, { x: M.l + (W - M.l - M.r) / 2, y: PH - 8, "text-anchor": "middle", "font-size": PLOT_TITLE_PX, fill: "#3d4452", class: "axis-title", "data-axis": "x" }, "step");
  const cy = M.t + (PH - M.t - M.b) / 2;
  svgText(svg, { x: 13, y: cy, transform: "rotate(-90 13 " + cy + ")", "text-anchor": "middle", "font-size": PLOT_TITLE_PX, fill: "#3d4452", class: "axis-title", "data-axis": "y" },
    fitText(svg, metric, log ? " (log scale)" : "", PH - M.t - M.b, PLOT_TITLE_PX));
  svg.append(svgEl("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: PH - M.t - M.b, fill: "none", stroke: "#c7ccd6" }));
}

function drawPlot(svg, metric, data, view, tip, log) {
  svg.textContent = "";
  const domain = view.domain;
  svg.setAttribute("data-x0", domain[0]); svg.setAttribute("data-x1", domain[1]);
  svg.setAttribute("data-log", log ? "1" : "0");
  const lines = data.runs.map(r => (r.series[metric] || []).filter(p => p[0] >= domain[0] && p[0] <= domain[1] && (!log || p[1] > 0)));
  const fr = plotFrame(svg, lines, view, log);
  const { W, M, sx, sy } = fr;
  svg.setAttribute("width", W);
  svg.setAttribute("data-left", M.l); svg.setAttribute("data-right", W - M.r);
  drawAxes(svg, metric, fr, log);
  lines.forEach((pts, i) => {
    if (!pts.length) return;
    const colour = PALETTE[i % PALETTE.length];
    svg.append(svgEl("polyline", { fill: "none", stroke: colour, "stroke-width": 1.6, "data-run": i,
      "data-n": pts.length, points: pts.map(p => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ") }));
    if (pts.length <= 40) pts.forEach(p => svg.append(svgEl("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.2, fill: colour })));
  });
  const pw = W - M.l - M.r;
  const hit = svgEl("rect", { x: M.l, y: M.t, width: pw, height: PH - M.t - M.b, fill: "transparent", class: "hit" });
  const brush = svgEl("rect", { y: M.t, height: PH - M.t - M.b, fill: "rgba(36,86,199,0.15)", width: 0, class: "brush" });
  svg.append(brush, hit);
  const stepAt = x => domain[0] + (x - svg.getBoundingClientRect().left - M.l) / pw * (domain[1] - domain[0]);
  let from = null;
  hit.addEventListener("mousedown", e => { from = e.clientX; });
  hit.addEventListener("mousemove", e => {
    const b = svg.getBoundingClientRect();
    if (from != null) {
      brush.setAttribute("x", Math.min(from, e.clientX) - b.left); brush.setAttribute("width", Math.abs(e.clientX - from));
    }
    const s = stepAt(e.clientX);
    const rows = data.runs.map(r => {
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
    const xs = [stepAt(from), stepAt(e.clientX)];
    from = null;
    if (Math.abs(xs[1] - xs[0]) > (domain[1] - domain[0]) * 0.01) {
      view.domain = [Math.max(view.full[0], Math.min(...xs)), Math.min(view.full[1], Math.max(...xs))];
      view.redraw();
    } else brush.setAttribute("width", 0);
  });
  hit.addEventListener("dblclick", () => { view.domain = view.full.slice(); view.redraw(); });
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
