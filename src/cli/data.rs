//! `pzt data RECIPE [--show N] [--export FILE] [--set KEY=VALUE]... [--json]`.

use super::common::{lib_err, Failure};
use pzt::data::report::{export_line, marked, stats, train_source_order, DataStats};
use pzt::data::tokenizer::Tokenizer;
use pzt::data::Dataset;
use std::io::Write;
use std::path::PathBuf;

/// Prepare (or reuse) a recipe's dataset and print its statistics; needs only `[run]` and
/// `[data]`.
#[derive(clap::Args)]
pub struct Args {
    /// The recipe file.
    recipe: PathBuf,
    /// Print the first N training examples (in source order) with the tokens that carry loss
    /// between [[ and ]].
    #[arg(long, value_name = "N")]
    show: Option<usize>,
    /// Write the train split in source order as JSON lines {"tokens": [...], "loss_mask": [...]}
    /// (preference pairs: {"prompt_ids", "chosen_ids", "rejected_ids"}; unpaired rows:
    /// {"prompt_ids", "completion_ids", "label"}).
    #[arg(long, value_name = "FILE")]
    export: Option<PathBuf>,
    /// Override a recipe key: KEY.PATH=VALUE.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the statistics as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let r = pzt::recipe::Recipe::load(&a.recipe, &a.set).map_err(lib_err)?;
    let Some(data) = r.data.clone() else {
        return Err(Failure::BadInput(format!(
            "{}: `pzt data` needs a `[data]` section",
            a.recipe.display()
        )));
    };
    let base = r.base_dir();
    super::common::check_outputs(
        &pzt::base::outputs::Outputs::new()
            .inputs(r.input_paths())
            .output_opt("--export", a.export.as_ref()),
    )?;
    let located = |e: pzt::Error| lib_err(r.locate(e.in_section("data")));
    let out = &r.run.out_dir;
    let opened = Dataset::open(&data, &base, out, r.run.seed).map_err(located)?;
    let (tok, ds, cached) = (opened.tokenizer, opened.dataset, opened.cached);
    let window = data.seq_len().map(|s| s + 1).unwrap_or(0);
    let st = stats(&ds, window).map_err(lib_err)?;
    // --show and --export read the examples unpacked.
    let mut plain = data.clone();
    plain.pack = false;
    let (ds_plain, _) =
        Dataset::open_with(&plain, &base, out, r.run.seed, tok.as_ref()).map_err(located)?;
    let order = train_source_order(&ds_plain, r.run.seed);
    if let Some(path) = &a.export {
        export(path, &ds_plain, &order)?;
    }
    if a.json {
        // The keys sorted.
        let v = serde_json::to_value(&st).unwrap_or_default();
        let sorted: std::collections::BTreeMap<String, serde_json::Value> = v
            .as_object()
            .map(|o| o.clone().into_iter().collect())
            .unwrap_or_default();
        println!(
            "{}",
            serde_json::to_string_pretty(&sorted).unwrap_or_default()
        );
        return Ok(());
    }
    let mut out = summary(&r, &data, &st, window, cached);
    if let (Some(n), Some(t)) = (a.show, tok.as_ref()) {
        show_examples(&mut out, t, &ds_plain, &order, n)?;
    }
    if let Some(p) = &a.export {
        out.push_str(&format!(
            "wrote {} ({} examples)\n",
            p.display(),
            order.len()
        ));
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(())
}

/// Writes the train examples in `order` to `path` as JSON lines (`--export`).
fn export(
    path: &std::path::Path,
    ds_plain: &pzt::data::Dataset,
    order: &[usize],
) -> Result<(), Failure> {
    let mut text = String::new();
    for &j in order {
        if let Some(line) = export_line(&ds_plain.train.get(j).map_err(lib_err)?) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    pzt::base::outputs::write(path, text.as_bytes()).map_err(lib_err)?;
    Ok(())
}

/// A count with its digits grouped.
fn g(n: usize) -> String {
    pzt::base::text::grouped(n as i64)
}

/// The statistics as text: the dataset, its counts, mixture, packing and lengths.
fn summary(
    r: &pzt::recipe::Recipe,
    data: &pzt::data::spec::DataSpec,
    st: &DataStats,
    window: usize,
    cached: bool,
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "data        `{}` ({}, {})\n",
        r.run.name,
        data.source_name(),
        if cached { "from the cache" } else { "prepared" }
    ));
    out.push_str(&format!(
        "examples    {} train, {} eval\n",
        g(st.train_examples),
        g(st.eval_examples)
    ));
    out.push_str(&format!(
        "tokens      {} ({} carry loss)\n",
        g(st.tokens),
        g(st.loss_tokens)
    ));
    match st.kind {
        pzt::data::ExampleKind::Pairs => {
            out.push_str("rows        preference pairs (prompt, chosen, rejected)\n")
        }
        pzt::data::ExampleKind::Unpaired => out.push_str(&format!(
            "rows        unpaired: {} desirable, {} undesirable\n",
            g(st.desirable.unwrap_or(0)),
            g(st.undesirable.unwrap_or(0))
        )),
        _ => {}
    }
    out.push_str(&format!(
        "overflow    {} skipped, {} truncated (longer than {} tokens)\n",
        g(st.skipped),
        g(st.truncated),
        window
    ));
    if !st.mixture.is_empty() {
        let parts: Vec<String> = st
            .mixture
            .iter()
            .enumerate()
            .map(|(i, n)| format!("source {i}: {}", g(*n)))
            .collect();
        out.push_str(&format!("mixture     {} examples\n", parts.join(", ")));
    }
    if st.packed {
        out.push_str(&format!(
            "packing     {} documents in {} train windows of {window} tokens, {:.1}% full\n",
            g(st.documents),
            g(st.train_examples),
            100.0 * st.packed_fill.unwrap_or(0.0)
        ));
    }
    push_lengths(&mut out, st, window);
    out
}

/// Appends the example lengths and their histogram to `out`, when the statistics have them.
fn push_lengths(out: &mut String, st: &DataStats, window: usize) {
    let opt = |n: Option<usize>| n.map(g).unwrap_or_else(|| "-".into());
    if let Some(mean) = st.mean_length {
        out.push_str(&format!(
            "length      {} to {}, mean {mean:.1}; unpacked windows of {window} are {:.1}% full\n",
            opt(st.min_length),
            opt(st.max_length),
            100.0 * st.unpacked_fill.unwrap_or(0.0)
        ));
        out.push_str("histogram\n");
        let max = st
            .length_histogram
            .iter()
            .map(|b| b.examples)
            .max()
            .unwrap_or(0)
            .max(1);
        for b in &st.length_histogram {
            let n = b.examples;
            let line = format!(
                "  {:>6} - {:<6} {:>8}  {}",
                g(b.from),
                g(b.to),
                g(n),
                "#".repeat((n * 40).div_ceil(max))
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// Appends the first `n` train examples in `order` to `out`, with the tokens that carry loss
/// marked (`--show`).
fn show_examples(
    out: &mut String,
    t: &Tokenizer,
    ds_plain: &pzt::data::Dataset,
    order: &[usize],
    n: usize,
) -> Result<(), Failure> {
    for (k, &j) in order.iter().take(n).enumerate() {
        use pzt::data::Example;
        let e = &ds_plain.train.get(j).map_err(lib_err)?;
        let head = match e {
            Example::Tokens { ids, mask, .. } => format!(
                "{} tokens, {} carry loss",
                ids.len(),
                mask.iter().filter(|&&m| m == 1).count()
            ),
            Example::Pair {
                prompt,
                chosen,
                rejected,
            } => format!(
                "a pair: prompt {} tokens, chosen {}, rejected {}",
                prompt.len(),
                chosen.len(),
                rejected.len()
            ),
            Example::Unpaired {
                prompt,
                completion,
                label,
            } => format!(
                "{} row: prompt {} tokens, completion {}",
                if *label {
                    "a desirable"
                } else {
                    "an undesirable"
                },
                prompt.len(),
                completion.len()
            ),
            Example::Row { .. } => continue,
        };
        out.push_str(&format!("--- example {k}: {head}\n{}\n", marked(t, e)));
    }
    Ok(())
}
