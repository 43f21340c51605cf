//! `pzt show MODEL [--depth N] [--json] [--html OUT.html] [--set KEY=VALUE]...`.

use super::common::{lib_err, tree_of, use_color, Failure};
use std::path::{Path, PathBuf};

/// Print the model tree of a recipe, an HF directory or a checkpoint, or write it as an HTML
/// page.
#[derive(clap::Args)]
pub struct Args {
    /// A recipe, a HuggingFace model directory, a run checkpoint directory, or a run directory
    /// (its newest checkpoint; RUN@best, RUN@latest).
    model: PathBuf,
    /// Collapse nodes below this depth (default: show everything).
    #[arg(long)]
    depth: Option<usize>,
    /// Print the tree as JSON.
    #[arg(long, conflicts_with = "html")]
    json: bool,
    /// Write a self-contained HTML page: the collapsible tree, parameters with statistics,
    /// values as heatmaps (a recipe's model at its seeded initialization).
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
    /// Override a recipe key: KEY.PATH=VALUE.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Writes the HTML page of `model` (values loaded), with `selection` highlighted.
pub fn write_page(
    model: &Path,
    set: &[String],
    out: &Path,
    selection: Option<&pzt::tree::selector::Selector>,
    selector_text: &str,
) -> Result<(), Failure> {
    let outputs = pzt::base::outputs::Outputs::new()
        .input(model)
        .output("--html", out);
    super::common::check_outputs(&outputs)?;
    let m = super::common::load_with(model, set, None, tch::Device::Cpu).map_err(lib_err)?;
    super::common::check_outputs(&outputs.inputs(super::common::model_files(&m)))?;
    let vocab = m.tokenizer.as_ref().map(|t| {
        let n = pzt::tree::select(&m.tree)
            .at_instances_of("EmbeddingLookup")
            .get()
            .first()
            .and_then(|(_, n)| n.layer_as::<pzt::layers::embedding::EmbeddingLookup>())
            .map(|l| l.vocab_size)
            .unwrap_or(0)
            .min(pzt::viz::model::MAX_ARRAY_VALUES);
        (0..n).map(|i| t.decode(&[i])).collect::<Vec<String>>()
    });
    let selection = selection.map(|s| {
        let paths: Vec<String> = s
            .select(&m.tree)
            .get()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        (selector_text.to_string(), paths)
    });
    let view = pzt::viz::ModelView {
        source: model.display().to_string(),
        selection,
        vocab,
    };
    let data = pzt::viz::model_data(&m.tree, &view).map_err(lib_err)?;
    let title = format!("pzt · {}", model.display());
    pzt::viz::page::write(out, &title, &data).map_err(lib_err)?;
    println!("wrote {}", out.display());
    Ok(())
}

pub fn run(a: Args) -> Result<(), Failure> {
    if let Some(out) = &a.html {
        return write_page(&a.model, &a.set, out, None, "");
    }
    let tree = tree_of(&a.model, &a.set)?;
    if a.json {
        let j = pzt::recipe::report::tree_json(&tree, "", None);
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
    } else {
        print!(
            "{}",
            tree.render_styled(a.depth.unwrap_or(usize::MAX), use_color())
        );
    }
    Ok(())
}
