//! The HTML pages in a real browser (headless Chromium over the DevTools protocol): no console
//! errors and no network requests, the tree expands on click, a heatmap has the expected number
//! of cells and colours, hovering shows values. Screenshots go to `PZT_SCREENSHOTS` (the
//! README's pictures: `scripts/screenshots.sh`) or the test's temporary directory.
mod common;
use common::browser::Browser;
use common::tiny::tmpdir;
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
    let v = b.eval(&format!(
        "(() => {{ const c = document.querySelector({}); c.scrollIntoView({{block: 'start'}}); const r = c.getBoundingClientRect(); return [r.left, r.top, Number(c.dataset.px)]; }})()",
        json!(selector)
    ));
    let f = |i: usize| v[i].as_f64().unwrap();
    (f(0), f(1), f(2))
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
    clean(&mut b);
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
    b.screenshot(&shot(&d, "select.png"));
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
    let (_, meta) = pzt::store::arrays::read(&out).unwrap();
    let n = meta["tokens"].split(' ').count() as u64;
    assert_eq!(dims, json!([n * 4, n]));
    // Causal attention: above the diagonal is exactly 0, the lowest value, drawn in the
    // sequential scale's first colour; row 0 puts all its weight on token 0.
    assert_eq!(cell_rgb(&mut b, 0, 1), [68, 1, 84]);
    // Opening the second array draws a second heatmap.
    b.click(&format!(".section[data-name=\"{}\"] > .row", names[1]));
    assert_eq!(count(&mut b, "canvas.heatmap"), 2);
    // Hover names the token of the seq and kv_seq axes.
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
    // Drag across the loss plot from step ~1.5 to ~3.5: every plot shows steps 2 and 3.
    let r = b.eval("(() => { const s = document.querySelector('svg.plot[data-metric=\"loss\"]'); s.scrollIntoView({block: 'center'}); const b = s.getBoundingClientRect(); return [b.left, b.top]; })()");
    let (x, y) = (r[0].as_f64().unwrap(), r[1].as_f64().unwrap());
    let at = |step: f64| x + 58.0 + step / 4.0 * (560.0 - 58.0 - 12.0);
    b.page(
        "Input.dispatchMouseEvent",
        json!({ "type": "mouseMoved", "x": at(1.5), "y": y + 100.0 }),
    );
    b.page("Input.dispatchMouseEvent", json!({ "type": "mousePressed", "x": at(1.5), "y": y + 100.0, "button": "left", "clickCount": 1 }));
    b.page(
        "Input.dispatchMouseEvent",
        json!({ "type": "mouseMoved", "x": at(3.5), "y": y + 100.0, "button": "left" }),
    );
    b.page("Input.dispatchMouseEvent", json!({ "type": "mouseReleased", "x": at(3.5), "y": y + 100.0, "button": "left", "clickCount": 1 }));
    assert_eq!(n(&mut b, "loss"), json!([2, 2]));
    assert_eq!(n(&mut b, "lr"), json!([2, 2]), "the zoom is shared");
    let x0 = b
        .eval("Number(document.querySelector('svg.plot[data-metric=\"grad_norm\"]').dataset.x0)")
        .as_f64()
        .unwrap();
    assert!((x0 - 1.5).abs() < 0.05, "{x0}");
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
