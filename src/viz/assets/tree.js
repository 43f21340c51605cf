// The model tree, collapsible node by node (treescope's role): kind, child name, path (a
// button copies it, to use as a selector), the axes summary, the parameters with shape, dtype,
// count, trainable / frozen, sharing and statistics. Clicking a parameter shows its values.
// On a selection page the matches are highlighted and their ancestors open. Buttons expand and
// collapse every node; a search box shows the nodes and parameters whose path or kind contains
// its text (with the nodes on the way to them), marks the text and hides the rest.

function fmtCount(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(2) + "B";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "K";
  return String(n);
}

function copyText(text, button) {
  const done = () => { const t = button.textContent; button.textContent = "copied"; setTimeout(() => { button.textContent = t; }, 900); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => {});
    return;
  }
  const ta = el("textarea", { style: "position:fixed;left:-1000px" });
  ta.value = text;
  document.body.append(ta);
  ta.select();
  try { document.execCommand("copy"); done(); } catch (e) { /* nothing to copy to */ }
  ta.remove();
}

function subtreeCount(node, seen) {
  let n = 0;
  for (const p of node.params) if (!seen.has(p.label)) { seen.add(p.label); n += p.count; }
  for (const c of node.children) n += subtreeCount(c, seen);
  return n;
}

function hasSelected(node) {
  return node.selected || node.children.some(hasSelected);
}

// `text` into `span`, the (case-insensitive) occurrences of `q` marked.
function markText(span, text, q) {
  span.textContent = "";
  if (!q) { span.textContent = text; return; }
  const low = text.toLowerCase();
  let at = 0;
  for (let i = low.indexOf(q); i >= 0; i = low.indexOf(q, at)) {
    span.append(text.slice(at, i), el("mark", { text: text.slice(i, i + q.length) }));
    at = i + q.length;
  }
  span.append(text.slice(at));
}

// The search over the tree: which nodes and parameters match `q` (a case-insensitive part of a
// path or a kind), and which nodes hold a match below them. Returns the number of matches.
function markMatches(node, q) {
  let n = 0;
  node.hit = !!q && (node.path.toLowerCase().includes(q) || node.kind.toLowerCase().includes(q));
  node.below = false;
  for (const p of node.params) {
    p.hit = !!q && p.path.toLowerCase().includes(q);
    if (p.hit) { n++; node.below = true; }
  }
  for (const c of node.children) {
    n += markMatches(c, q);
    if (c.hit || c.below) node.below = true;
  }
  return n + (node.hit ? 1 : 0);
}

function renderModelPage(app, data) {
  const sharedBy = {};
  (function count(n) { for (const p of n.params) sharedBy[p.label] = (sharedBy[p.label] || 0) + 1; n.children.forEach(count); })(data.tree);
  const p = data.parameters;
  const header = el("header", {},
    el("h1", { text: (data.page === "selection" ? "pzt select \u00b7 " : "pzt show \u00b7 ") + data.source }),
    el("div", { class: "meta", text: fmtCount(p.total) + " parameters (" + fmtCount(p.trainable) + " trainable, " + fmtCount(p.frozen) + " frozen) \u00b7 click a parameter to see its values" }));
  if (data.page === "selection") {
    header.append(el("div", { class: "meta" }, "selector ", el("code", { text: data.selector }), ": ",
      el("span", { id: "match-count", text: data.matches + (data.matches === 1 ? " match" : " matches") })));
  }
  const tree = el("div", { id: "tree" });
  const detail = el("div", { id: "detail", hidden: "" });
  const search = el("input", { id: "search", type: "search", placeholder: "search paths and kinds", "aria-label": "search the tree" });
  const found = el("span", { id: "search-count", class: "dim" });
  const toolbar = el("div", { class: "toolbar" },
    el("button", { id: "expand-all", text: "expand all", onclick: () => expandAll(rootBox) }),
    el("button", { id: "collapse-all", text: "collapse all", onclick: () => collapseAll(rootBox) }),
    search, found);
  tree.append(toolbar);
  app.append(header, el("main", {}, tree, detail));
  let query = "", searching = false;

  function closeDetail() {
    detail.hidden = true;
    detail.textContent = "";
    document.querySelectorAll(".param.active").forEach(e => e.classList.remove("active"));
  }
  function showParam(prm, row) {
    document.querySelectorAll(".param.active").forEach(e => e.classList.remove("active"));
    row.classList.add("active");
    detail.textContent = "";
    detail.hidden = false;
    detail.append(el("button", { class: "close", title: "close (the tree takes the width)", text: "\u00d7 close", onclick: closeDetail }));
    const owner = prm.shared_with ? findParam(data.tree, prm.shared_with) : prm;
    if (prm.shared_with) detail.append(el("div", { class: "note", text: prm.path + " is the same parameter as " + prm.shared_with }));
    if (owner && owner.array != null) renderArray(detail, data.arrays[owner.array]);
    else if (owner && owner.summary) detail.append(el("div", { class: "mono", text: owner.path + ": " + owner.summary }),
      el("div", { class: "note", text: "the values are not embedded (the page's budget is spent)" }));
    else detail.append(el("div", { class: "note", text: prm.path + " has no values here (a parameter slot: open a checkpoint or an HF directory to see values)" }));
  }
  function findParam(node, path) {
    for (const q of node.params) if (q.path === path) return q;
    for (const c of node.children) { const f = findParam(c, path); if (f) return f; }
    return null;
  }
  function paramRow(prm) {
    const shape = prm.axes.map((ax, i) => ax + ":" + prm.shape[i]).join(", ");
    const row = el("div", { class: "param", "data-path": prm.path },
      el("span", { class: "pname", text: prm.name }), ": ",
      el("span", { class: "mono", text: prm.dtype + "[" + shape + "]" }), " ",
      el("span", { class: "count", text: fmtCount(prm.count) }),
      el("span", { class: "badge " + prm.status, text: prm.status }));
    if (prm.quantized) row.append(el("span", { class: "badge quantized", text: prm.quantized + ", statistics of the dequantized values" }));
    if (prm.shared_with) row.append(el("span", { class: "badge shared", text: "shared with " + prm.shared_with }));
    else if (sharedBy[prm.label] > 1) row.append(el("span", { class: "badge shared", text: "shared (" + sharedBy[prm.label] + " uses)" }));
    if (prm.summary) row.append(el("span", { class: "stats mono", text: prm.summary }));
    row.addEventListener("click", () => showParam(prm, row));
    row.pzt = { prm };
    return row;
  }
  function nodeEl(node, depth) {
    const box = el("div", { class: "node" + (node.selected ? " selected" : ""), "data-path": node.path, "data-kind": node.kind });
    const leaf = node.children.length === 0 && node.params.length === 0 && node.state.length === 0;
    const toggle = el("span", { class: "toggle" + (leaf ? " leaf" : ""), text: "\u25b8" });
    const row = el("div", { class: "row" }, toggle);
    if (node.name != null) row.append(el("span", { class: "cname", text: node.name + ":" }));
    const kind = el("span", { class: "kind", text: node.kind });
    row.append(kind);
    if (node.summary) row.append(el("span", { class: "summary mono", text: node.summary }));
    const n = subtreeCount(node, new Set());
    if (n > 0) row.append(el("span", { class: "count", text: fmtCount(n) + " params" }));
    const copy = el("span", { class: "copy", title: "copy the path (a selector)", text: node.path === "" ? "<root>" : node.path });
    copy.addEventListener("click", e => { e.stopPropagation(); copyText(node.path, copy); });
    row.append(copy);
    box.append(row);
    let body = null;
    const open = () => {
      if (!body) {
        body = el("div", { class: "body" });
        node.params.forEach(q => body.append(paramRow(q)));
        node.state.forEach(s => body.append(el("div", { class: "param state" }, el("span", { class: "pname", text: s.name }), ": state ", el("span", { class: "mono", text: s.label }))));
        node.children.forEach(c => body.append(nodeEl(c, depth + 1)));
        box.append(body);
        // A node opened by hand while a search is on shows the same filter.
        if (query && !searching) applySearch(box, !!box.parentElement && !!box.parentElement.closest(".node.hit"));
      }
      body.style.display = "";
      toggle.textContent = "\u25be";
      box.classList.add("open");
    };
    const close = () => { if (body) body.style.display = "none"; toggle.textContent = "\u25b8"; box.classList.remove("open"); };
    if (!leaf) row.addEventListener("click", () => (box.classList.contains("open") ? close() : open()));
    box.pzt = { node, leaf, open, close, kind, copy, body: () => body };
    const auto = data.page === "selection" ? node.children.some(hasSelected) : depth < 2;
    if (!leaf && auto) open();
    return box;
  }
  // The built child boxes and parameter rows of `box`.
  function kids(box) {
    const body = box.pzt.body();
    return body ? [...body.children] : [];
  }
  function expandAll(box) {
    if (!box.pzt.leaf) box.pzt.open();
    for (const k of kids(box)) if (k.pzt && k.pzt.node) expandAll(k);
  }
  function collapseAll(box) {
    for (const k of kids(box)) if (k.pzt && k.pzt.node) { collapseAll(k); k.pzt.close(); }
  }
  // Shows what matches the query (with the nodes on the way to it, opened, and everything
  // inside a matching node), marks the matches and hides the rest.
  function applySearch(box, inside) {
    const { node } = box.pzt;
    const shown = !query || inside || node.hit || node.below;
    box.classList.toggle("filtered", !shown);
    box.classList.toggle("hit", !!node.hit);
    markText(box.pzt.kind, node.kind, query);
    markText(box.pzt.copy, node.path === "" ? "<root>" : node.path, query);
    if (!shown) return;
    if (query && node.below) box.pzt.open();
    const within = inside || !!node.hit;
    for (const k of kids(box)) {
      if (k.pzt && k.pzt.node) applySearch(k, within);
      else if (k.pzt && k.pzt.prm) {
        const prm = k.pzt.prm;
        k.classList.toggle("filtered", !!query && !within && !prm.hit);
        k.classList.toggle("hit", !!prm.hit);
      } else k.classList.toggle("filtered", !!query && !within);
    }
  }
  search.addEventListener("input", () => {
    query = search.value.trim().toLowerCase();
    const n = markMatches(data.tree, query);
    found.textContent = query ? n + (n === 1 ? " match" : " matches") : "";
    searching = true;
    applySearch(rootBox, false);
    searching = false;
    const first = tree.querySelector(".node.hit, .param.hit");
    if (first) first.scrollIntoView({ block: "nearest" });
  });
  const rootBox = nodeEl(data.tree, 0);
  tree.append(rootBox);
}

// A page of arrays (a capture): one section per array, the first open.
function renderArraysPage(app, data) {
  app.append(el("header", {},
    el("h1", { text: data.title }),
    el("div", { class: "meta", text: data.subtitle || "" })));
  const list = el("div", { id: "tree" });
  app.append(el("main", {}, list));
  data.arrays.forEach((arr, i) => {
    const sec = el("div", { class: "section", "data-name": arr.name });
    const toggle = el("span", { class: "toggle", text: "\u25b8" });
    const row = el("div", { class: "row" }, toggle, el("span", { class: "cname", text: arr.name }),
      el("span", { class: "mono summary", text: arr.dtype + "[" + arr.axes.map((ax, k) => ax + ":" + arr.shape[k]).join(", ") + "]" }),
      el("span", { class: "stats mono", text: arr.summary }));
    sec.append(row);
    let body = null;
    row.addEventListener("click", () => {
      if (!body) { body = el("div", {}); renderArray(body, arr); sec.append(body); toggle.textContent = "\u25be"; return; }
      const hide = body.style.display !== "none";
      body.style.display = hide ? "none" : "";
      toggle.textContent = hide ? "\u25b8" : "\u25be";
    });
    list.append(sec);
    if (i === 0) row.click();
  });
}
