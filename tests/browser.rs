//! The HTML pages in a real browser (headless Chromium over the DevTools protocol): no console
//! errors and no network requests, the tree expands on click (and all at once) and filters by a
//! search, a heatmap has the expected number of cells and colours and tick labels (tokens where
//! the page has them), hovering shows values, a report has its headline numbers, axis titles and
//! log scales, and no text pokes out of its pane, plot or band. Screenshots go to
//! `PZT_SCREENSHOTS` (the docs' pictures: `scripts/screenshots.sh`) or the test's temporary
//! directory.
mod common;
use common::browser::Browser;
use common::tmpdir;
use common::{fixture, run_pzt};
use serde_json::json;
use std::path::{Path, PathBuf};

fn shot(dir: &Path, name: &str) -> PathBuf {
    match std::env::var_os("PZT_SCREENSHOTS") {
        Some(d) => PathBuf::from(d).join(name),
        None => dir.join(name),
    }
}

fn clean(b: &mut Browser) {
    let errs = b.errors();
    assert!(errs.is_empty(), "console errors: {errs:?}");
    let reqs = b.requests();
    assert!(reqs.is_empty(), "the page fetched {reqs:?}");
}

/// The colour of the centre pixel of heatmap cell (r, c), as [r, g, b].
fn cell_rgb(b: &mut Browser, r: i64, c: i64) -> [u8; 3] {
    let v = b.eval(&format!(
        "(() => {{ const cv = document.querySelector('canvas.heatmap'); const px = Number(cv.dataset.px); const d = cv.getContext('2d').getImageData({c} * px + Math.floor(px / 2), {r} * px + Math.floor(px / 2), 1, 1).data; return [d[0], d[1], d[2]]; }})()"
    ));
    let a: Vec<u8> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect();
    [a[0], a[1], a[2]]
}

/// The text content of the element `selector` matches.
fn text(b: &mut Browser, selector: &str) -> String {
    b.eval(&format!(
        "document.querySelector({}).textContent",
        json!(selector)
    ))
    .as_str()
    .unwrap()
    .to_string()
}

/// The page position of the top-left corner of the canvas `selector` matches (scrolled into
/// view) and its pixels per cell.
fn canvas_origin(b: &mut Browser, selector: &str) -> (f64, f64, f64) {
    // The heatmap's own scroller is put back to its start (the column labels stay above the
    // canvas there) and the array scrolled into view when the canvas's top is not in view.
    let v = b.eval(&format!(
        "(() => {{ const c = document.querySelector({}); const w = c.closest('.canvas-wrap'); w.scrollTop = 0; w.scrollLeft = 0; const t = c.getBoundingClientRect().top; if (t < 0 || t > innerHeight - 100) c.closest('.array').scrollIntoView({{block: 'start'}}); const r = c.getBoundingClientRect(); return [r.left, r.top, Number(c.dataset.px)]; }})()",
        json!(selector)
    ));
    let f = |i: usize| v[i].as_f64().unwrap();
    (f(0), f(1), f(2))
}

/// The elements `inner` matches inside each element `outer` matches whose box pokes out of that
/// outer box by more than half a pixel (sideways only unless `vertical`), described for a
/// message. Hidden elements (no box) are skipped.
fn poking_out(b: &mut Browser, outer: &str, inner: &str, vertical: bool) -> Vec<String> {
    let v = b.eval(&format!(
        r#"(() => {{
      const out = [];
      for (const o of document.querySelectorAll({o})) {{
        const r = o.getBoundingClientRect();
        for (const e of o.querySelectorAll({i})) {{
          const q = e.getBoundingClientRect();
          if (q.width === 0 && q.height === 0) continue;
          const x = q.left < r.left - 0.5 || q.right > r.right + 0.5;
          const y = q.top < r.top - 0.5 || q.bottom > r.bottom + 0.5;
          if (x || ({v} && y)) out.push(JSON.stringify(e.textContent) + " at " + [q.left, q.top, q.right, q.bottom].map(Math.round) + " outside " + [r.left, r.top, r.right, r.bottom].map(Math.round));
        }}
      }}
      return out;
    }})()"#,
        o = json!(outer),
        i = json!(inner),
        v = vertical
    ));
    strings(&v)
}

/// Pairs of elements `selector` matches, among those of one parent, whose boxes overlap.
fn overlapping(b: &mut Browser, selector: &str) -> Vec<String> {
    let v = b.eval(&format!(
        r#"(() => {{
      const out = [], groups = new Map();
      for (const e of document.querySelectorAll({s})) {{
        const q = e.getBoundingClientRect();
        if (q.width === 0 && q.height === 0) continue;
        if (!groups.has(e.parentNode)) groups.set(e.parentNode, []);
        groups.get(e.parentNode).push([e, q]);
      }}
      for (const g of groups.values()) for (let i = 0; i < g.length; i++) for (let j = i + 1; j < g.length; j++) {{
        const [a, p] = g[i], [c, q] = g[j];
        if (Math.min(p.right, q.right) - Math.max(p.left, q.left) > 0.5 && Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top) > 0.5)
          out.push(JSON.stringify(a.textContent) + " and " + JSON.stringify(c.textContent));
      }}
      return out;
    }})()"#,
        s = json!(selector)
    ));
    strings(&v)
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// The text of every element `selector` matches that has a box.
fn texts(b: &mut Browser, selector: &str) -> Vec<String> {
    let v = b.eval(&format!(
        "[...document.querySelectorAll({})].filter(e => e.getClientRects().length).map(e => e.textContent)",
        json!(selector)
    ));
    strings(&v)
}

/// An item label as the heatmaps' tick labels show it: escapes visible, spaces as `␣`, at
/// most 14 characters (the last an ellipsis when cut).
fn tick_text(label: &str) -> String {
    let j = serde_json::to_string(label).unwrap();
    let s = j[1..j.len() - 1].replace(' ', "\u{2423}");
    let chars: Vec<char> = s.chars().collect();
    if chars.len() > 14 {
        chars[..13].iter().collect::<String>() + "\u{2026}"
    } else {
        s
    }
}

/// Sets the value of the input `selector` matches and tells the page (an `input` event).
fn set_input(b: &mut Browser, selector: &str, value: &str) {
    b.eval(&format!(
        "(() => {{ const e = document.querySelector({}); e.value = {}; e.dispatchEvent(new Event('input')); }})()",
        json!(selector),
        json!(value)
    ));
}

fn count(b: &mut Browser, selector: &str) -> u64 {
    b.eval(&format!(
        "document.querySelectorAll({}).length",
        json!(selector)
    ))
    .as_u64()
    .unwrap()
}

#[test]
fn model_page_expands_and_draws_parameters() {
    let d = tmpdir("browser", "model");
    let page = d.join("model.html");
    let hf = fixture("hf/chat-tiny");
    let (code, _, err) = run_pzt(&["show", &hf, "--html", page.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let mut b = Browser::launch("model");
    b.open(&page);
    clean(&mut b);
    // Nothing is open yet: no values pane, the tree takes the whole width.
    assert_tree_width(&mut b, true);

    // Depth 0 and 1 are open: the blocks are there, closed; clicking one opens it.
    let before = count(&mut b, ".node");
    assert!(b
        .eval("!!document.querySelector('.node[data-path=\"blocks.0\"]:not(.open)')")
        .as_bool()
        .unwrap());
    b.click(".node[data-path=\"blocks.0\"] > .row");
    let after = count(&mut b, ".node");
    assert!(after > before, "{before} -> {after}");
    assert!(b
        .eval("document.querySelector('.node[data-path=\"blocks.0\"]').classList.contains('open')")
        .as_bool()
        .unwrap());
    assert!(count(&mut b, ".node[data-path=\"blocks.0.attention\"]") == 1);
    // Clicking again closes it.
    b.click(".node[data-path=\"blocks.0\"] > .row");
    assert!(!b
        .eval("document.querySelector('.node[data-path=\"blocks.0\"]').classList.contains('open')")
        .as_bool()
        .unwrap());

    // The embedding table [vocab 384, embedding 32]: rows are the vocabulary.
    b.click(".param[data-path=\"embed.embeddings\"]");
    assert_tree_width(&mut b, false);
    let dims = b.eval("(() => { const c = document.querySelector('#detail canvas.heatmap'); return [Number(c.dataset.rows), Number(c.dataset.cols), Number(c.dataset.px), c.width, c.height]; })()");
    let v: Vec<i64> = dims
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    assert_eq!((v[0], v[1]), (384, 32), "{dims}");
    assert_eq!(
        (v[3], v[4]),
        (32 * v[2], 384 * v[2]),
        "one block of px pixels per cell"
    );
    // Every cell is drawn with a colour of the scale: many distinct colours, none special.
    let mut colours = std::collections::HashSet::new();
    for r in (0..384).step_by(7) {
        for c in 0..32 {
            let rgb = cell_rgb(&mut b, r, c);
            assert!(
                ![[255, 0, 255], [0, 255, 0], [0, 255, 255]].contains(&rgb),
                "special colour at {r},{c}"
            );
            colours.insert(rgb);
        }
    }
    assert!(colours.len() > 100, "{} colours", colours.len());

    // Tick labels: the rows are labelled with the vocabulary's tokens (every few items), the
    // columns with the embedding's indices; every label sits inside its band, none overlaps.
    let vocab = b.eval("pztData.arrays.find(a => a.name === 'embed.embeddings').labels.vocab");
    let rows = b.eval("[...document.querySelectorAll('#detail .ticks.rows .tick')].map(t => [t.title, t.textContent])");
    let rows = rows.as_array().unwrap();
    assert!(rows.len() >= 20, "{rows:?}");
    for r in rows {
        let (title, shown) = (r[0].as_str().unwrap(), r[1].as_str().unwrap());
        let i: usize = title["vocab=".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(shown, tick_text(vocab[i].as_str().unwrap()), "{title}");
    }
    let cols: Vec<u64> = texts(&mut b, "#detail .ticks.cols .tick")
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    assert!(cols.len() >= 4 && cols[0] == 0, "{cols:?}");
    assert!(cols.windows(2).all(|w| w[1] - w[0] == cols[1]), "{cols:?}");
    let out = poking_out(&mut b, "#detail .ticks", ".tick", true);
    assert!(out.is_empty(), "{out:?}");
    let over = overlapping(&mut b, "#detail .tick");
    assert!(over.is_empty(), "{over:?}");

    // Hovering a cell shows its indices, the token and the value stored in the checkpoint.
    let w = pzt::models::hf::Weights::open(Path::new(&hf)).unwrap();
    let table = w.get("model.embed_tokens.weight").unwrap();
    let want = table.double_value(&[5, 7]);
    let (x0, y0, px) = canvas_origin(&mut b, "#detail canvas.heatmap");
    // Aim at the centre of cell (5, 7).
    b.hover(x0 + 7.5 * px, y0 + 5.5 * px);
    let tip = text(&mut b, "#detail .tip");
    let mut lines = tip.lines();
    let head = lines.next().unwrap();
    assert!(
        head.starts_with("vocab=5 \"") && head.ends_with("embedding=7"),
        "{tip}"
    );
    let got: f64 = lines.next().unwrap().parse().unwrap();
    assert!(
        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
        "{got} vs {want}"
    );
    b.screenshot(&shot(&d, "show.png"));

    // Expand all opens (and builds) every node; collapse all closes all but the root.
    let total = b.eval(
        "(function c(n) { return 1 + n.children.reduce((s, k) => s + c(k), 0); })(pztData.tree)",
    );
    let inner = b.eval("(function c(n) { const leaf = !n.children.length && !n.params.length && !n.state.length; return (leaf ? 0 : 1) + n.children.reduce((s, k) => s + c(k), 0); })(pztData.tree)");
    assert!(total.as_u64().unwrap() > 20, "{total}");
    b.click("#expand-all");
    assert_eq!(json!(count(&mut b, ".node")), total);
    assert_eq!(json!(count(&mut b, ".node.open")), inner);
    assert_eq!(
        b.eval("[...document.querySelectorAll('.node, .param')].filter(e => e.offsetParent === null).length"),
        json!(0)
    );
    // Everything open, the values pane beside the tree: no text runs past either pane's edge,
    // in a narrower window too.
    for width in [1280, 900] {
        b.resize(width, 900);
        let out = poking_out(&mut b, "#tree", ".row > *, .param > *", false);
        assert!(out.is_empty(), "{width}px: {out:?}");
        let out = poking_out(
            &mut b,
            "#detail",
            ".array > :not(.canvas-wrap), .axes > *, .legend > *, .note",
            false,
        );
        assert!(out.is_empty(), "{width}px: {out:?}");
    }
    b.resize(1280, 900);
    b.click("#collapse-all");
    assert_eq!(count(&mut b, ".node.open"), 1);
    let shown = b.eval(
        "[...document.querySelectorAll('.node')].filter(e => e.offsetParent !== null).length",
    );
    assert_eq!(shown, json!(1 + root_children(&mut b)));
    search_filters_the_tree(&mut b, "Norm");
    search_filters_the_tree(&mut b, "rope");
    // The output projection [embedding 32, vocab 384]: the vocabulary's tokens label the
    // columns, standing upright, every few of them.
    b.click("#expand-all");
    b.click(".param[data-path=\"lm_head.weights\"]");
    assert_eq!(count(&mut b, "#detail .ticks.cols.vertical"), 1);
    let cols = b.eval("[...document.querySelectorAll('#detail .ticks.cols .tick')].map(t => [t.title, t.textContent])");
    let cols = cols.as_array().unwrap();
    assert!(cols.len() >= 20, "{cols:?}");
    for c in cols {
        let (title, shown) = (c[0].as_str().unwrap(), c[1].as_str().unwrap());
        let i: usize = title["vocab=".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(shown, tick_text(vocab[i].as_str().unwrap()), "{title}");
    }
    let out = poking_out(&mut b, "#detail .ticks", ".tick", true);
    assert!(out.is_empty(), "{out:?}");
    let over = overlapping(&mut b, "#detail .tick");
    assert!(over.is_empty(), "{over:?}");
    // Closing the values pane gives the tree the whole width again.
    b.click("#detail .close");
    assert_tree_width(&mut b, true);
    clean(&mut b);
}

/// The number of children of the model's root.
fn root_children(b: &mut Browser) -> u64 {
    b.eval("pztData.tree.children.length").as_u64().unwrap()
}

/// With `alone`, the values pane is hidden and the tree spans the page; else the pane is shown
/// beside a narrower tree.
fn assert_tree_width(b: &mut Browser, alone: bool) {
    let w = b.eval("(() => { const d = document.querySelector('#detail'); return [document.querySelector('#tree').getBoundingClientRect().width, document.querySelector('main').getBoundingClientRect().width, d.hidden, d.getBoundingClientRect().width]; })()");
    let f = |i: usize| w[i].as_f64().unwrap();
    if alone {
        assert!(w[2] == json!(true) && f(3) == 0.0, "{w}");
        assert!(
            f(0) >= f(1) - 1.0,
            "the tree is narrower than the page: {w}"
        );
    } else {
        assert!(w[2] == json!(false) && f(3) > 300.0, "{w}");
        assert!(f(0) < 0.7 * f(1), "{w}");
    }
}

/// The nodes (path or kind) and parameters (path) of the page's tree that contain `q`, without
/// regard to case.
fn matches(node: &serde_json::Value, q: &str, out: &mut Vec<(String, bool)>) {
    let has = |s: &serde_json::Value| s.as_str().unwrap().to_lowercase().contains(q);
    if has(&node["path"]) || has(&node["kind"]) {
        out.push((node["path"].as_str().unwrap().to_string(), true));
    }
    for p in node["params"].as_array().unwrap() {
        if has(&p["path"]) {
            out.push((p["path"].as_str().unwrap().to_string(), false));
        }
    }
    for c in node["children"].as_array().unwrap() {
        matches(c, q, out);
    }
}

/// Typing `q` in the search box shows exactly the matching nodes and parameters (marked), the
/// nodes on the way to them and what is inside a matching node; it hides the rest and counts
/// the matches. Emptying the box shows everything again.
fn search_filters_the_tree(b: &mut Browser, q: &str) {
    let tree = b.eval("pztData.tree");
    let mut want = vec![];
    matches(&tree, &q.to_lowercase(), &mut want);
    assert!(want.len() >= 2, "{q}: {want:?}");
    b.type_text("#search", q);
    let mut hits = texts_of(b, ".hit", "path");
    hits.sort();
    let mut paths: Vec<String> = want.iter().map(|(p, _)| p.clone()).collect();
    paths.sort();
    assert_eq!(hits, paths, "{q}");
    assert_eq!(
        text(b, "#search-count"),
        format!("{} matches", want.len()),
        "{q}"
    );
    let nodes: Vec<&String> = want.iter().filter(|(_, n)| *n).map(|(p, _)| p).collect();
    for shown in texts_of(b, ".node:not(.hit), .param[data-path]:not(.hit)", "path") {
        let above = shown.is_empty() || paths.iter().any(|h| h.starts_with(&format!("{shown}.")));
        let inside = nodes
            .iter()
            .any(|h| h.is_empty() || shown.starts_with(&format!("{h}.")));
        assert!(above || inside, "{q}: {shown} is shown");
    }
    assert!(count(b, ".node.filtered") > 0, "{q}: nothing hidden");
    let marks = texts(b, "mark");
    assert!(!marks.is_empty(), "{q}");
    assert!(marks.iter().all(|m| m.eq_ignore_ascii_case(q)), "{marks:?}");
    set_input(b, "#search", "");
    assert_eq!(
        count(b, ".filtered") + count(b, ".hit") + count(b, "mark"),
        0
    );
}

/// The `data-KEY` of every element `selector` matches that has a box.
fn texts_of(b: &mut Browser, selector: &str, key: &str) -> Vec<String> {
    let v = b.eval(&format!(
        "[...document.querySelectorAll({})].filter(e => e.getClientRects().length).map(e => e.dataset[{}])",
        json!(selector),
        json!(key)
    ));
    strings(&v)
}

#[test]
fn selection_page_highlights_the_matches() {
    let d = tmpdir("browser", "select");
    let page = d.join("select.html");
    let hf = fixture("hf/chat-tiny");
    let (_, listed, _) = run_pzt(&["select", &hf, "Attention Linear"]);
    let n = listed.lines().count() as u64 - 1;
    assert!(n > 4);
    let (code, _, err) = run_pzt(&[
        "select",
        &hf,
        "Attention Linear",
        "--html",
        page.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let mut b = Browser::launch("select");
    b.open(&page);
    clean(&mut b);
    // Every match is highlighted and visible (its ancestors are open), nothing else is.
    assert_eq!(count(&mut b, ".node.selected"), n);
    let first = listed
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(
        count(&mut b, &format!(".node.selected[data-path=\"{first}\"]")),
        1
    );
    let hidden = b.eval("[...document.querySelectorAll('.node.selected')].filter(e => e.offsetParent === null).length");
    assert_eq!(hidden, json!(0));
    assert_eq!(
        b.eval("document.querySelector('#match-count').textContent"),
        json!(format!("{n} matches"))
    );
    // Nothing open: the tree spans the page; no path runs past its edge, also with every node
    // open in a narrow window.
    assert_tree_width(&mut b, true);
    b.screenshot(&shot(&d, "select.png"));
    let out = poking_out(&mut b, "#tree", ".row > *, .param > *", false);
    assert!(out.is_empty(), "{out:?}");
    b.click("#expand-all");
    b.resize(700, 900);
    let out = poking_out(&mut b, "#tree", ".row > *, .param > *", false);
    assert!(out.is_empty(), "{out:?}");
    // The matches stay highlighted through a search.
    search_filters_the_tree(&mut b, "query");
    assert_eq!(count(&mut b, ".node.selected"), n);
    clean(&mut b);
}

#[test]
fn arrays_mark_nan_infinities_and_outliers_and_axes_move() {
    let d = tmpdir("browser", "arrays");
    // [a 3, b 5]: specials on row 0, an outlier at (2, 4), the rest small values of both signs.
    let mut vals: Vec<f32> = (0..15)
        .map(|i| ((i * 7) % 11) as f32 / 10.0 - 0.5)
        .collect();
    vals[0] = f32::NAN;
    vals[1] = f32::INFINITY;
    vals[2] = f32::NEG_INFINITY;
    vals[14] = 1000.0;
    let t = tch::Tensor::from_slice(&vals).reshape([3, 5]);
    let v = pzt::viz::ArrayView::new("x", &t, &["a".into(), "b".into()], 1000)
        .unwrap()
        .label("a", vec!["first".into(), "second".into(), "third".into()]);
    let page = d.join("arrays.html");
    pzt::viz::page::write(
        &page,
        "arrays",
        &json!({ "page": "arrays", "title": "arrays", "arrays": [v.to_json()] }),
    )
    .unwrap();
    let mut b = Browser::launch("arrays");
    b.open(&page);
    clean(&mut b);
    let dims = b.eval("[...['rows','cols']].map(k => Number(document.querySelector('canvas.heatmap').dataset[k]))");
    assert_eq!(dims, json!([3, 5]));
    // Tick labels: the rows by their item labels, the columns by their indices.
    assert_eq!(
        texts(&mut b, ".ticks.rows .tick"),
        ["first", "second", "third"]
    );
    assert_eq!(
        texts(&mut b, ".ticks.cols .tick"),
        ["0", "1", "2", "3", "4"]
    );
    assert_eq!(text(&mut b, ".axis-titles"), "rows: a \u{b7} columns: b");
    assert_eq!(cell_rgb(&mut b, 0, 0), [255, 0, 255], "NaN");
    assert_eq!(cell_rgb(&mut b, 0, 1), [0, 255, 0], "+inf");
    assert_eq!(cell_rgb(&mut b, 0, 2), [0, 255, 255], "-inf");
    // Both signs: the diverging scale, whose middle (0) is near white.
    assert!(b
        .eval("document.querySelector('.legend').textContent")
        .as_str()
        .unwrap()
        .contains("diverging"));
    // The outlier is drawn at the end of the scale with a black corner mark.
    let corner = b.eval("(() => { const cv = document.querySelector('canvas.heatmap'); const px = Number(cv.dataset.px); const d = cv.getContext('2d').getImageData(4 * px + px - 3, 2 * px + 2, 1, 1).data; return [d[0], d[1], d[2]]; })()");
    assert_eq!(corner, json!([0, 0, 0]));
    assert_eq!(
        cell_rgb(&mut b, 2, 4),
        [178, 24, 43],
        "the scale's top colour"
    );
    // Axis `a` to a slider: one row; the slider picks row 2 (the outlier's).
    b.eval("(() => { const s = document.querySelector('select[data-axis=\"a\"]'); s.value = 'slider'; s.dispatchEvent(new Event('change')); })()");
    assert_eq!(
        b.eval("Number(document.querySelector('canvas.heatmap').dataset.rows)"),
        json!(1)
    );
    b.eval("(() => { const r = document.querySelector('input[type=range][data-axis=\"a\"]'); r.value = 2; r.dispatchEvent(new Event('input')); })()");
    assert_eq!(cell_rgb(&mut b, 0, 4), [178, 24, 43]);
    assert!(texts(&mut b, ".ticks.rows .tick").is_empty());
    let label = b.eval("document.querySelector('.axis input[type=range]').nextSibling.textContent");
    assert_eq!(label, json!("a=2 \"third\""));
    // Hover: the tooltip names the row by its label.
    let (x, y) = b.centre("canvas.heatmap");
    b.hover(x, y);
    let tip = text(&mut b, ".tip");
    assert!(tip.starts_with("a=2 \"third\"  b=2\n"), "{tip:?}");
    let shown: f32 = tip.lines().nth(1).unwrap().parse().unwrap();
    assert!((shown - vals[12]).abs() < 1e-6, "{shown}");
    clean(&mut b);
}

#[test]
fn capture_page_shows_each_array_with_token_labels() {
    let d = tmpdir("browser", "capture");
    let page = d.join("capture.html");
    let hf = fixture("hf/chat-tiny");
    let out = d.join("c.safetensors");
    let (code, stdout, err) = run_pzt(&[
        "capture",
        &hf,
        "--select",
        "Attention > query_key_to_attn",
        "--text",
        "hello world",
        "--out",
        out.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("blocks."))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{stdout}");
    let mut b = Browser::launch("capture");
    b.open(&page);
    clean(&mut b);
    assert_eq!(count(&mut b, ".section"), 2);
    assert_eq!(
        b.eval("document.querySelector('.section').dataset.name"),
        json!(names[0])
    );
    // The first array is open: attention weights {batch, seq, kv_heads, q_rep, kv_seq}; the
    // size-1 batch goes to a slider, the kv_seq to the columns, the rest to the rows.
    let dims = b.eval("[...['rows','cols']].map(k => Number(document.querySelector('canvas.heatmap').dataset[k]))");
    let (_, meta) = pzt::run::checkpoint::arrays::read(&out).unwrap();
    let n = meta["tokens"].split(' ').count() as u64;
    assert_eq!(dims, json!([n * 4, n]));
    // Both axes carry the tokens as tick labels: the rows one per token (each over its block of
    // heads), the columns one per token; readable, inside their bands, none overlapping, and
    // the heatmap needs no sideways scrolling.
    let labels = b.eval("pztData.arrays[0].labels");
    let seq = strings(&labels["seq"]);
    assert_eq!(strings(&labels["kv_seq"]), seq);
    assert_eq!(seq.len() as u64, n);
    assert_eq!(seq.concat(), "hello world");
    let want: Vec<String> = seq.iter().map(|t| tick_text(t)).collect();
    assert!(want.contains(&"\u{2423}".to_string()), "{want:?}");
    assert_eq!(
        texts(&mut b, ".section:first-child .ticks.rows .tick"),
        want
    );
    assert_eq!(
        texts(&mut b, ".section:first-child .ticks.cols .tick"),
        want
    );
    let px =
        b.eval("parseFloat(getComputedStyle(document.querySelector('.ticks .tick')).fontSize)");
    assert!(px.as_f64().unwrap() >= 11.0, "{px}");
    let out = poking_out(&mut b, ".ticks", ".tick", true);
    assert!(out.is_empty(), "{out:?}");
    let over = overlapping(&mut b, ".tick");
    assert!(over.is_empty(), "{over:?}");
    assert_eq!(
        b.eval("(() => { const w = document.querySelector('.canvas-wrap'); return w.scrollWidth <= w.clientWidth; })()"),
        json!(true)
    );
    // Causal attention: above the diagonal is exactly 0, the lowest value, drawn in the
    // sequential scale's first colour; row 0 puts all its weight on token 0.
    assert_eq!(cell_rgb(&mut b, 0, 1), [68, 1, 84]);
    // Opening the second array draws a second heatmap.
    b.click(&format!(".section[data-name=\"{}\"] > .row", names[1]));
    assert_eq!(count(&mut b, "canvas.heatmap"), 2);
    // Hover names the token of the seq and kv_seq axes (the page from its top, for the picture).
    b.eval("window.scrollTo(0, 0)");
    let (x0, y0, px) = canvas_origin(&mut b, "canvas.heatmap");
    b.hover(x0 + 0.5 * px, y0 + 0.5 * px);
    let tip = text(&mut b, ".tip");
    assert!(
        tip.starts_with("batch=0  seq=0 \"") && tip.contains("kv_seq=0 \""),
        "{tip:?}"
    );
    b.screenshot(&shot(&d, "capture.png"));
    clean(&mut b);
}

#[test]
fn report_overlays_runs_and_zooms() {
    let d = tmpdir("browser", "report");
    let mut dirs = vec![];
    for (name, lr) in [("a", "3e-3"), ("b", "1e-2")] {
        let sub = d.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let r = common::tiny::recipe(&sub, 4, "");
        let (code, _, err) = run_pzt(&[
            "train",
            r.to_str().unwrap(),
            "--set",
            &format!("optim.lr={lr}"),
        ]);
        assert_eq!(code, 0, "{err}");
        dirs.push(sub.join("run").display().to_string());
    }
    let page = d.join("report.html");
    let (code, _, err) = run_pzt(&[
        "report",
        &dirs[0],
        &dirs[1],
        "--html",
        page.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let mut b = Browser::launch("report");
    b.open(&page);
    clean(&mut b);
    let metrics = b.eval("pztData.metrics");
    let names: Vec<&str> = metrics
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(
        names[..4],
        ["loss", "eval.loss", "lr", "grad_norm"],
        "{names:?}"
    );
    assert_eq!(count(&mut b, "svg.plot"), names.len() as u64);
    // Both runs on every plot: 4 logged steps of loss each, 2 evals each.
    let n = |b: &mut Browser, m: &str| {
        b.eval(&format!("[...document.querySelectorAll('svg.plot[data-metric=\"{m}\"] polyline')].map(p => Number(p.dataset.n))"))
    };
    assert_eq!(n(&mut b, "loss"), json!([4, 4]));
    assert_eq!(n(&mut b, "eval.loss"), json!([2, 2]));
    report_headline_and_axes(&mut b, &dirs);
    // Drag across the loss plot from step ~1.5 to ~3.5: every plot shows steps 2 and 3.
    let r = b.eval("(() => { const s = document.querySelector('svg.plot[data-metric=\"loss\"]'); s.scrollIntoView({block: 'center'}); const b = s.getBoundingClientRect(); return [b.left, b.top, Number(s.dataset.left), Number(s.dataset.right)]; })()");
    let f = |i: usize| r[i].as_f64().unwrap();
    let (x, y, left, right) = (f(0), f(1), f(2), f(3));
    let at = |step: f64| x + left + step / 4.0 * (right - left);
    // Hovering names each run's value at the nearest step.
    b.hover(at(3.0), y + 100.0);
    let tip = text(&mut b, ".tip");
    assert!(
        tip.starts_with("loss\n") && tip.matches("step 3: ").count() == 2,
        "{tip:?}"
    );
    // Double-click zooms out.
    b.page("Input.dispatchMouseEvent", json!({ "type": "mousePressed", "x": at(2.0), "y": y + 100.0, "button": "left", "clickCount": 2 }));
    b.page("Input.dispatchMouseEvent", json!({ "type": "mouseReleased", "x": at(2.0), "y": y + 100.0, "button": "left", "clickCount": 2 }));
    assert_eq!(n(&mut b, "loss"), json!([4, 4]));
    // Each run: its checkpoints (steps 2 and 4, the best marked), its environment, its recipe.
    for i in 0..2 {
        let rows = b.eval(&format!("[...document.querySelectorAll('.run[data-run=\"{i}\"] table.checkpoints tr')].slice(1).map(r => r.cells[0].textContent)"));
        assert_eq!(rows, json!(["step-2", "step-4"]));
        assert_eq!(
            count(
                &mut b,
                &format!(".run[data-run=\"{i}\"] table.checkpoints tr.best")
            ),
            1
        );
        assert_eq!(
            count(
                &mut b,
                &format!(".run[data-run=\"{i}\"] table.environment tr")
            ),
            2
        );
        assert!(b
            .eval(&format!(
                "document.querySelector('.run[data-run=\"{i}\"] pre.recipe').textContent"
            ))
            .as_str()
            .unwrap()
            .contains("[train]"));
    }
    b.screenshot(&shot(&d, "report.png"));
    clean(&mut b);
}

/// The values of `metric` in a run's metrics.jsonl, in order.
fn logged(run: &str, metric: &str) -> Vec<f64> {
    std::fs::read_to_string(Path::new(run).join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| m[metric].as_f64())
        .collect()
}

/// The number at the start of `text` ("5.32417 final · step 4" gives 5.32417).
fn number(text: &str) -> f64 {
    text.split_whitespace().next().unwrap().parse().unwrap()
}

fn close_to(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-5 * want.abs().max(1e-12)
}

/// The report's headline (each run's final and best loss and eval loss, from its metrics.jsonl),
/// its width, axis titles, log scales and tick labels.
fn report_headline_and_axes(b: &mut Browser, dirs: &[String]) {
    for (i, dir) in dirs.iter().enumerate() {
        for (metric, best_is_min) in [
            ("loss", true),
            ("eval.loss", true),
            ("eval.token_accuracy", false),
        ] {
            let v = logged(dir, metric);
            let cell = format!("table.headline tr[data-run=\"{i}\"] td[data-metric=\"{metric}\"]");
            let last = *v.last().unwrap();
            let best = v.iter().copied().fold(v[0], |a, x| {
                if (x < a) == best_is_min && x != a {
                    x
                } else {
                    a
                }
            });
            let fin = number(&text(b, &format!("{cell} .final")));
            let top = number(&text(b, &format!("{cell} .best")));
            assert!(close_to(fin, last), "{metric} of run {i}: {fin} vs {last}");
            assert!(
                close_to(top, best),
                "{metric} of run {i}: {top} vs {best} in {v:?}"
            );
        }
    }
    assert_eq!(count(b, "table.headline tr[data-run]"), dirs.len() as u64);
    // The plots share the page's width: the last of the first row ends at the grid's edge.
    let w = b.eval("(() => { const g = document.querySelector('.plots').getBoundingClientRect(); const f = [...document.querySelectorAll('figure.plot-box')].map(e => e.getBoundingClientRect()); return [g.left, g.right, window.innerWidth, Math.max(...f.filter(r => r.top === f[0].top).map(r => r.right))]; })()");
    let f = |i: usize| w[i].as_f64().unwrap();
    assert!(f(1) - f(0) >= 0.95 * f(2) - 40.0, "{w}");
    assert!(f(3) >= f(1) - 1.0, "{w}");
    // Axis titles on every plot: steps across, the metric up the side.
    let plots = count(b, "svg.plot");
    assert_eq!(count(b, "svg.plot text.axis-title[data-axis=x]"), plots);
    let t = texts(b, "svg.plot[data-metric=\"grad_norm\"] text.axis-title");
    assert_eq!(t, ["step", "grad_norm"]);
    // Losses start on a log scale, the rest on a linear one; the toggle switches.
    let log = |b: &mut Browser, m: &str| {
        b.eval(&format!(
            "document.querySelector('svg.plot[data-metric=\"{m}\"]').dataset.log"
        ))
    };
    assert_eq!(log(b, "loss"), json!("1"));
    assert_eq!(log(b, "eval.loss"), json!("1"));
    assert_eq!(log(b, "grad_norm"), json!("0"));
    assert_eq!(
        texts(b, "svg.plot[data-metric=\"loss\"] text.axis-title")[1],
        "loss (log scale)"
    );
    b.click("figure[data-metric=\"lr\"] .logscale input");
    assert_eq!(log(b, "lr"), json!("1"));
    b.click("figure[data-metric=\"lr\"] .logscale input");
    assert_eq!(log(b, "lr"), json!("0"));
    no_clipped_ticks(b);
}

/// Every text of every plot is inside its plot, no two tick labels overlap and no two of an
/// axis read the same.
fn no_clipped_ticks(b: &mut Browser) {
    let same = b.eval("[...document.querySelectorAll('svg.plot text.tick')].reduce((m, e) => { const k = e.closest('svg').dataset.metric + ' ' + e.dataset.axis; (m[k] = m[k] || []).push(e.textContent); return m; }, {})");
    for (axis, labels) in same.as_object().unwrap() {
        let l = strings(labels);
        let distinct: std::collections::BTreeSet<&String> = l.iter().collect();
        assert_eq!(distinct.len(), l.len(), "{axis}: {l:?}");
    }
    let out = poking_out(b, "svg.plot", "text", true);
    assert!(out.is_empty(), "{out:?}");
    let over = overlapping(b, "svg.plot text.tick");
    assert!(over.is_empty(), "{over:?}");
}

#[test]
fn report_ticks_fit_extreme_values() {
    // Steps to 250000; values from 1e-9 to 1e8, of both signs: linear and log scales, a wide
    // and a narrow window.
    let d = tmpdir("browser", "report-ticks");
    let series = json!({
        "loss": [[0, 12.5], [1000, 3.25], [125000, 0.31], [250000, 0.0021]],
        "lr": [[0, 1e-7], [2000, 3e-4], [250000, 3e-5]],
        "tiny": [[0, 1.234e-9], [250000, 5.5e-9]],
        "huge": [[0, 98765432.1], [250000, 12345678.9]],
        "signed": [[0, -0.00012], [250000, 0.00034]],
        "offset": [[0, 1234567.1], [250000, 1234567.9]],
        "flat": [[0, 7.0], [250000, 7.0]],
        "eval.a_metric_with_a_name_longer_than_its_plot_is_tall": [[0, 1.0], [250000, 2.0]],
    });
    let data = json!({
        "page": "report",
        "title": "pzt report · extremes",
        "metrics": ["loss", "lr", "tiny", "huge", "signed", "offset", "flat", "eval.a_metric_with_a_name_longer_than_its_plot_is_tall"],
        "runs": [{
            "name": "x", "dir": "/runs/x", "state": "finished", "steps_done": 250000,
            "steps_total": 250000, "metric": null, "best": null, "last": null,
            "headline": [{ "metric": "loss", "maximize": false, "key": false,
                "final": { "value": 0.0021, "step": 250000 }, "best": { "value": 0.0021, "step": 250000 } }],
            "series": series, "checkpoints": [], "recipe": null, "throughput": null,
            "environment": [], "bytes": 0,
        }],
        "viewer": {},
    });
    let page = d.join("report.html");
    pzt::viz::page::write(&page, "extremes", &data).unwrap();
    let mut b = Browser::launch("report-ticks");
    b.open(&page);
    clean(&mut b);
    assert_eq!(
        text(&mut b, "table.headline td[data-metric=\"loss\"] .final"),
        "0.0021"
    );
    // The signed series cannot go on a log scale.
    assert_eq!(
        b.eval("document.querySelector('figure[data-metric=\"signed\"] .logscale input').disabled"),
        json!(true)
    );
    for width in [1280, 600] {
        b.resize(width, 900);
        no_clipped_ticks(&mut b);
        // Every other plot to the other scale.
        b.eval(
            "document.querySelectorAll('.logscale input:not(:disabled)').forEach(e => e.click())",
        );
        no_clipped_ticks(&mut b);
        let logs =
            b.eval("[...document.querySelectorAll('svg.plot')].map(s => s.dataset.log).join('')");
        assert_eq!(
            logs,
            json!(if width == 1280 {
                "01110111"
            } else {
                "10000000"
            })
        );
        assert!(
            count(
                &mut b,
                "svg.plot[data-metric=\"tiny\"] text.tick[data-axis=y]"
            ) >= 2
        );
    }
    clean(&mut b);
}
