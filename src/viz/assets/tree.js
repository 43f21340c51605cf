// The model tree, collapsible node by node (treescope's role): kind, child name, path (a
// button copies it, to use as a selector), the axes summary, the parameters with shape, dtype,
// count, trainable / frozen, sharing and statistics. Clicking a parameter shows its values.
// On a selection page the matches are highlighted and their ancestors open.

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

function renderModelPage(app, data) {
  const sharedBy = {};
  (function count(n) { for (const p of n.params) sharedBy[p.label] = (sharedBy[p.label] || 0) + 1; n.children.forEach(count); })(data.tree);
  const p = data.parameters;
  const header = el("header", {},
    el("h1", { text: (data.page === "selection" ? "pzt select \u00b7 " : "pzt show \u00b7 ") + data.source }),
    el("div", { class: "meta", text: fmtCount(p.total) + " parameters (" + fmtCount(p.trainable) + " trainable, " + fmtCount(p.frozen) + " frozen)" }));
  if (data.page === "selection") {
    header.append(el("div", { class: "meta" }, "selector ", el("code", { text: data.selector }), ": ",
      el("span", { id: "match-count", text: data.matches + (data.matches === 1 ? " match" : " matches") })));
  }
  const tree = el("div", { id: "tree" });
  const detail = el("div", { id: "detail" });
  app.append(header, el("main", {}, tree, detail));

  function showParam(prm, row) {
    document.querySelectorAll(".param.active").forEach(e => e.classList.remove("active"));
    row.classList.add("active");
    detail.textContent = "";
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
    if (prm.shared_with) row.append(el("span", { class: "badge shared", text: "shared with " + prm.shared_with }));
    else if (sharedBy[prm.label] > 1) row.append(el("span", { class: "badge shared", text: "shared (" + sharedBy[prm.label] + " uses)" }));
    if (prm.summary) row.append(el("span", { class: "stats mono", text: prm.summary }));
    row.addEventListener("click", () => showParam(prm, row));
    return row;
  }
  function nodeEl(node, depth) {
    const box = el("div", { class: "node" + (node.selected ? " selected" : ""), "data-path": node.path, "data-kind": node.kind });
    const leaf = node.children.length === 0 && node.params.length === 0 && node.state.length === 0;
    const toggle = el("span", { class: "toggle" + (leaf ? " leaf" : ""), text: "\u25b8" });
    const row = el("div", { class: "row" }, toggle);
    if (node.name != null) row.append(el("span", { class: "cname", text: node.name + ":" }));
    row.append(el("span", { class: "kind", text: node.kind }));
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
      }
      body.style.display = "";
      toggle.textContent = "\u25be";
      box.classList.add("open");
    };
    const close = () => { if (body) body.style.display = "none"; toggle.textContent = "\u25b8"; box.classList.remove("open"); };
    if (!leaf) row.addEventListener("click", () => (box.classList.contains("open") ? close() : open()));
    const auto = data.page === "selection" ? node.children.some(hasSelected) : depth < 2;
    if (!leaf && auto) open();
    return box;
  }
  tree.append(nodeEl(data.tree, 0));
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
