// Arrays as pictures (treescope's render_array): each named axis goes to the rows, the
// columns or a slider; the colour scale is diverging around zero when the array has both
// signs and sequential otherwise; NaN, +inf, -inf and outliers get their own marks; hovering
// a cell shows its indices (with item labels) and its value. The rows and the columns carry tick
// labels: the item labels of their outermost axis (the tokens of a `seq`, `kv_seq` or `vocab`
// axis) where the page has them, else its indices, as many as fit without overlapping.

const SPECIAL = { nan: "#ff00ff", posinf: "#00ff00", neginf: "#00ffff" };
const DIVERGING = [[33, 102, 172], [103, 169, 207], [209, 229, 240], [247, 247, 247],
  [253, 219, 199], [239, 138, 98], [178, 24, 43]];
const SEQUENTIAL = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const MAX_ROWS_DEFAULT = 2048;
const MAX_CELLS = 4 << 20;
const TICK_FONT = "11px ui-monospace, \"SFMono-Regular\", Menlo, Consolas, monospace";
const TICK_LINE = 13, TICK_CHARS = 14;
let measureCtx = null;

// The width in pixels of tick label `text`.
function tickWidth(text) {
  if (!measureCtx) { measureCtx = document.createElement("canvas").getContext("2d"); measureCtx.font = TICK_FONT; }
  return Math.ceil(measureCtx.measureText(text).width);
}

// An item label as a tick: escapes visible, spaces as \u2423, cut to TICK_CHARS characters.
function tickText(label) {
  const s = JSON.stringify(String(label)).slice(1, -1).replace(/ /g, "\u2423");
  const chars = [...s];
  return chars.length > TICK_CHARS ? chars.slice(0, TICK_CHARS - 1).join("") + "\u2026" : s;
}

// The smallest of 1, 2, 5, 10, 20, ... that is at least `x`.
function niceStep(x) {
  if (x <= 1) return 1;
  const mag = Math.pow(10, Math.floor(Math.log10(x)));
  return [1, 2, 5, 10].map(m => m * mag).find(m => m >= x - 1e-9);
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

function decodeF32(b64) {
  const bin = atob(b64);
  const buf = new ArrayBuffer(bin.length);
  const u8 = new Uint8Array(buf);
  for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
  return new Float32Array(buf);
}

function fmtValue(v) {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+inf";
  if (v === -Infinity) return "-inf";
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e5 || a < 1e-3 ? v.toExponential(4) : String(Number(v.toPrecision(6)));
}

function lerpStops(stops, t) {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i, a = stops[i], b = stops[i + 1];
  return "rgb(" + [0, 1, 2].map(k => Math.round(a[k] + (b[k] - a[k]) * f)).join(",") + ")";
}

// The colour scale of an array: diverging around zero when it has both signs, else
// sequential. Values beyond Tukey's far fences (3 interquartile ranges outside the quartiles
// of the embedded values) are outliers when they are few (at most 1% of the values, or one):
// the scale stops at the fences and they are drawn at its end, with a corner mark.
function colourScale(stats, values) {
  if (stats.mean == null) return { kind: "none", lo: 0, hi: 0, colour: () => "#cccccc" };
  const fin = Float64Array.from(values.filter(Number.isFinite)).sort();
  const q = f => fin[Math.min(fin.length - 1, Math.floor(f * (fin.length - 1)))];
  let lo = stats.min, hi = stats.max;
  if (fin.length >= 4) {
    const q1 = q(0.25), q3 = q(0.75), iqr = q3 - q1;
    const flo = q1 - 3 * iqr, fhi = q3 + 3 * iqr;
    let beyond = 0;
    for (const v of fin) if (v < flo || v > fhi) beyond++;
    // Only a few far values are outliers; many of them are the shape of the data.
    if (iqr > 0 && beyond <= Math.max(1, 0.01 * fin.length)) { lo = Math.max(lo, flo); hi = Math.min(hi, fhi); }
  }
  if (stats.min < 0 && stats.max > 0) {
    const lim = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
    return { kind: "diverging", lo: -lim, hi: lim,
      colour: v => lerpStops(DIVERGING, (v / lim + 1) / 2), outlier: v => Math.abs(v) > lim };
  }
  const span = hi - lo || 1;
  return { kind: "sequential", lo, hi,
    colour: v => lerpStops(SEQUENTIAL, (v - lo) / span), outlier: v => v < lo || v > hi };
}

function defaultAssignment(arr) {
  const n = arr.axes.length, a = {};
  arr.axes.forEach((ax, i) => { a[ax] = i === n - 1 ? "cols" : "rows"; });
  let rows = arr.axes.filter(ax => a[ax] === "rows");
  const size = ax => arr.shown[arr.axes.indexOf(ax)];
  // Axes of size 1 and, while the rows are too many, the leading row axes go to sliders.
  for (const ax of rows) if (size(ax) === 1 && rows.length > 1) a[ax] = "slider";
  rows = arr.axes.filter(ax => a[ax] === "rows");
  while (rows.length > 1 && rows.reduce((p, ax) => p * size(ax), 1) > MAX_ROWS_DEFAULT) {
    a[rows.shift()] = "slider";
  }
  return a;
}

// The tick labels of the rows or columns laid out over `axes` (outermost first), `px` pixels per
// cell: one per item of the outermost axis (centred on its block of cells), every `step`-th
// where they would overlap. Column labels lie flat when that shows as many of them as standing
// upright would (numbers always lie flat). Returns the labels with their widths, the orientation
// and the thickness of the band in pixels.
function axisTicks(arr, axes, px, across) {
  if (!axes.length) return { ticks: [], vertical: false, thick: 0, title: "" };
  const size = ax => arr.shown[arr.axes.indexOf(ax)];
  const outer = axes[0], n = size(outer), title = axes.join(" \u00d7 ");
  const block = axes.slice(1).reduce((p, ax) => p * size(ax), 1) * px, total = n * block;
  const labels = arr.labels && arr.labels[outer];
  const has = i => labels && labels[i] != null;
  const pick = step => {
    const out = [];
    for (let i = 0; i < n; i += step) {
      const text = has(i) ? tickText(labels[i]) : String(i);
      out.push({ at: i * block + block / 2, text, w: tickWidth(text),
        title: outer + "=" + i + (has(i) ? " " + JSON.stringify(labels[i]) : "") });
    }
    return out;
  };
  const widest = ticks => ticks.reduce((m, t) => Math.max(m, t.w), 0);
  const upright = niceStep((TICK_LINE + 2) / block);
  const ticks = pick(upright), wide = widest(ticks);
  if (!across) return { ticks, vertical: false, thick: wide + 10, title };
  const flat = { vertical: false, thick: TICK_LINE + 6, title };
  if (wide + 8 <= upright * block && wide <= total) return Object.assign(flat, { ticks });
  if (!labels) {
    const fewer = pick(niceStep((wide + 8) / block));
    if (widest(fewer) <= total) return Object.assign(flat, { ticks: fewer });
  }
  return { ticks, vertical: true, thick: wide + 10, title };
}

// Renders `arr` (the page's array JSON) into `host`; returns the heatmap's root element.
function renderArray(host, arr) {
  const values = decodeF32(arr.data);
  const scale = colourScale(arr.stats, values);
  const assign = defaultAssignment(arr);
  const pos = {};
  arr.axes.forEach(ax => { pos[ax] = 0; });
  const strides = [];
  let acc = 1;
  for (let i = arr.shown.length - 1; i >= 0; i--) { strides[i] = acc; acc *= arr.shown[i]; }
  const root = el("div", { class: "array" });
  const shapeText = arr.axes.map((ax, i) => ax + ":" + arr.shape[i]).join(" \u00d7 ");
  root.append(el("h2", { text: arr.name }),
    el("div", { class: "shape mono", text: arr.dtype + "[" + shapeText + "]" }),
    el("div", { class: "mono", text: arr.summary }));
  if (arr.shown.some((n, i) => n !== arr.shape[i])) {
    root.append(el("div", { class: "note", text: "showing the leading block [" +
      arr.shown.map((n, i) => arr.axes[i] + ":" + n).join(", ") + "] of the array" }));
  }
  const controls = el("div", { class: "axes" });
  const legend = el("div", { class: "legend" });
  const wrap = el("div", { class: "canvas-wrap" });
  const canvas = el("canvas", { class: "heatmap" });
  const tip = el("div", { class: "tip" });
  const titles = el("div", { class: "axis-titles dim" });
  const corner = el("div", { class: "ticks-corner" });
  const colTicks = el("div", { class: "ticks cols" });
  const rowTicks = el("div", { class: "ticks rows" });
  wrap.append(el("div", { class: "heatmap-grid" }, corner, colTicks, rowTicks, canvas));
  root.append(controls, legend, titles, wrap, tip);

  const label = (ax, i) => {
    const l = arr.labels && arr.labels[ax];
    return l && l[i] != null ? ax + "=" + i + " " + JSON.stringify(l[i]) : ax + "=" + i;
  };
  const axesOf = role => arr.axes.filter(ax => assign[ax] === role);
  const size = ax => arr.shown[arr.axes.indexOf(ax)];
  let layout = null;

  function unflatten(axes, k) {
    const out = {};
    for (let i = axes.length - 1; i >= 0; i--) { const n = size(axes[i]); out[axes[i]] = k % n; k = Math.floor(k / n); }
    return out;
  }
  function indexAt(r, c) {
    const at = Object.assign({}, pos, unflatten(layout.rows, r), unflatten(layout.cols, c));
    return { at, flat: arr.axes.reduce((s, ax, i) => s + at[ax] * strides[i], 0) };
  }
  function colourOf(v) {
    if (Number.isNaN(v)) return SPECIAL.nan;
    if (v === Infinity) return SPECIAL.posinf;
    if (v === -Infinity) return SPECIAL.neginf;
    return scale.colour(v);
  }
  function draw() {
    const rows = axesOf("rows"), cols = axesOf("cols");
    const nr = rows.reduce((p, ax) => p * size(ax), 1), nc = cols.reduce((p, ax) => p * size(ax), 1);
    if (nr * nc > MAX_CELLS) {
      canvas.width = canvas.height = 0;
      legend.textContent = "too many cells (" + nr * nc + "): put an axis on a slider";
      colTicks.textContent = rowTicks.textContent = titles.textContent = "";
      return;
    }
    const px = Math.max(1, Math.min(24, Math.floor(900 / nc), Math.floor(2400 / nr)));
    layout = { rows, cols, nr, nc, px };
    canvas.width = nc * px; canvas.height = nr * px;
    canvas.dataset.rows = nr; canvas.dataset.cols = nc; canvas.dataset.px = px;
    const g = canvas.getContext("2d");
    for (let r = 0; r < nr; r++) {
      for (let c = 0; c < nc; c++) {
        const v = values[indexAt(r, c).flat];
        g.fillStyle = colourOf(v);
        g.fillRect(c * px, r * px, px, px);
        if (px >= 6 && Number.isFinite(v) && scale.outlier && scale.outlier(v)) {
          const d = Math.max(2, Math.floor(px / 3));
          g.fillStyle = "#000000";
          g.fillRect(c * px + px - d - 1, r * px + 1, d, d);
        }
      }
    }
    drawLegend();
    drawTicks(rows, cols, px);
  }
  function drawTicks(rows, cols, px) {
    const r = axisTicks(arr, rows, px, false), c = axisTicks(arr, cols, px, true);
    titles.textContent = "rows: " + (r.title || "(none)") + " \u00b7 columns: " + (c.title || "(none)");
    rowTicks.textContent = colTicks.textContent = "";
    rowTicks.style.width = corner.style.width = r.thick + "px";
    const H = Math.max(canvas.height, TICK_LINE), W = Math.max(canvas.width, TICK_LINE);
    rowTicks.style.height = H + "px";
    colTicks.style.height = corner.style.height = c.thick + "px";
    colTicks.style.width = W + "px";
    colTicks.classList.toggle("vertical", c.vertical);
    // Each label centred on its items, moved inside the band at the ends.
    const clamp = (x, w, room) => Math.max(0, Math.min(room - w, x - w / 2));
    for (const t of r.ticks) {
      const top = clamp(t.at, TICK_LINE, H);
      rowTicks.append(el("span", { class: "tick", title: t.title, style: "top:" + top + "px", text: t.text }));
    }
    for (const t of c.ticks) {
      const left = clamp(t.at, c.vertical ? TICK_LINE : t.w, W);
      colTicks.append(el("span", { class: "tick", title: t.title, style: "left:" + left + "px", text: t.text }));
    }
  }
  function drawLegend() {
    legend.textContent = "";
    const stops = scale.kind === "diverging" ? DIVERGING : SEQUENTIAL;
    const grad = "linear-gradient(to right," + stops.map(s => "rgb(" + s.join(",") + ")").join(",") + ")";
    legend.append(el("span", { class: "mono", text: fmtValue(scale.lo) }),
      el("span", { class: "bar", style: "background:" + grad }),
      el("span", { class: "mono", text: fmtValue(scale.hi) }),
      el("span", { text: scale.kind }));
    for (const [k, name] of [["nan", "NaN"], ["posinf", "+inf"], ["neginf", "-inf"]]) {
      legend.append(el("span", {}, el("span", { class: "swatch", style: "background:" + SPECIAL[k] }), name));
    }
    legend.append(el("span", {}, el("span", { class: "swatch", style: "background:#000" }), "outlier (corner mark)"));
  }
  function buildControls() {
    controls.textContent = "";
    for (const ax of arr.axes) {
      const sel = el("select", { "data-axis": ax, onchange: e => { assign[ax] = e.target.value; buildControls(); draw(); } });
      for (const role of ["rows", "cols", "slider"]) {
        const o = el("option", { value: role, text: role });
        if (assign[ax] === role) o.selected = true;
        sel.append(o);
      }
      const box = el("span", { class: "axis" }, el("label", { class: "mono", text: ax + " (" + arr.shape[arr.axes.indexOf(ax)] + ")" }), sel);
      if (assign[ax] === "slider") {
        const shown = el("span", { class: "mono", text: label(ax, pos[ax]) });
        const range = el("input", { type: "range", min: 0, max: size(ax) - 1, value: pos[ax], "data-axis": ax,
          oninput: e => { pos[ax] = Number(e.target.value); shown.textContent = label(ax, pos[ax]); draw(); } });
        box.append(range, shown);
      }
      controls.append(box);
    }
  }
  canvas.addEventListener("mousemove", e => {
    if (!layout) return;
    const b = canvas.getBoundingClientRect();
    const c = Math.floor((e.clientX - b.left) / layout.px), r = Math.floor((e.clientY - b.top) / layout.px);
    if (r < 0 || c < 0 || r >= layout.nr || c >= layout.nc) { tip.style.display = "none"; return; }
    const { at, flat } = indexAt(r, c);
    tip.textContent = arr.axes.map(ax => label(ax, at[ax])).join("  ") + "\n" + fmtValue(values[flat]);
    tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px";
    tip.style.display = "block";
  });
  canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  buildControls();
  draw();
  host.append(root);
  return root;
}
