//! `pzt isolate MODEL --select PATH (--tokens IDS | --text TEXT) --out DIR` and
//! `pzt replay DIR [--set KEY=VALUE]... [--patch FILE] [--json]`.

use super::common::{check_outputs, lib_err, model_files, Failure};
use super::input::ModelInput;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Cut one layer out of a model with what it saw on one token sequence (Penzai's
/// isolate_submodel): its recipe subtree and parameters, its input, side inputs and output,
/// its state before and after.
#[derive(clap::Args)]
pub struct IsolateArgs {
    #[command(flatten)]
    input: ModelInput,
    /// The one layer to isolate, e.g. 'blocks.0.attention' (it must match exactly one).
    #[arg(long = "select", value_name = "SELECTOR")]
    select: String,
    /// The directory to write (created).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn isolate(a: IsolateArgs) -> Result<(), Failure> {
    let sel = pzt::tree::selector::Selector::parse(&a.select)
        .map_err(|e| Failure::Rendered(e.render(&a.select)))?;
    if a.out.join("isolate.json").exists() {
        return Err(Failure::BadInput(format!(
            "{} already holds an isolated submodel; choose another --out or remove it",
            a.out.display()
        )));
    }
    if a.out.exists() && !a.out.is_dir() {
        return Err(Failure::BadInput(format!(
            "--out {} is not a directory",
            a.out.display()
        )));
    }
    let outputs = pzt::probe::isolate::FILES
        .iter()
        .fold(a.input.outputs().in_new_dirs(), |o, f| {
            o.output("--out", a.out.join(f))
        });
    check_outputs(&outputs)?;
    let r = a.input.load()?;
    check_outputs(&outputs.inputs(model_files(&r.model)))?;
    let (m, ids, side, device) = (&r.model, &r.ids, &r.side, r.device);
    let selection = sel.select(&m.tree);
    let x = pzt::probe::token_input(ids, &m.axes, device).map_err(lib_err)?;
    let iso = pzt::probe::isolate(&selection, x, side).map_err(|e| match e {
        pzt::Error::Select(msg) => Failure::BadInput(format!("--select `{}`: {msg}", a.select)),
        other => lib_err(other),
    })?;
    let about = BTreeMap::from([
        (
            "model".to_string(),
            json!(a.input.model.display().to_string()),
        ),
        ("selector".to_string(), json!(a.select)),
        ("tokens".to_string(), json!(ids)),
    ]);
    pzt::probe::isolate::write(&iso, &a.out, &about).map_err(lib_err)?;
    let r = &iso.record;
    let shown = if iso.path.is_empty() {
        "<root>"
    } else {
        &iso.path
    };
    println!("isolated {shown} ({})", iso.submodel.kind());
    println!("  input   {}", pzt::probe::values::describe(&r.input));
    println!("  output  {}", pzt::probe::values::describe(&r.output));
    let keys: Vec<&String> = r.side.entries().map(|(k, _)| k).collect();
    if !keys.is_empty() {
        println!(
            "  side    {}",
            keys.iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !r.before.is_empty() {
        println!("  state   {} variable(s)", r.before.len());
    }
    println!("wrote {}", a.out.display());
    Ok(())
}

/// Re-run an isolated submodel on its saved input and compare with the saved output; `--set`
/// edits and a `[[patch]]` file change it first, to test an intervention in isolation.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// A directory written by `pzt isolate`.
    dir: PathBuf,
    /// Edit the submodel's recipe (`submodel.toml`): KEY.PATH=VALUE, e.g. model.cap=10.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// A TOML file of `[[patch]]` tables applied to the submodel.
    #[arg(long, value_name = "FILE")]
    patch: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn replay(a: ReplayArgs) -> Result<(), Failure> {
    let build = || {
        let r = pzt::recipe::of_model::of_replay(&a.dir, &a.set, a.patch.as_deref())?;
        let b = pzt::tree::Builder::new(r.run.seed).dtype(r.param_dtype);
        pzt::recipe::plan::Plan::build(r, &pzt::builtin_registry(), &b).map(|p| p.tree)
    };
    let edited = !a.set.is_empty() || a.patch.is_some();
    let r = pzt::probe::replay(&a.dir, edited, build).map_err(lib_err)?;
    let shown = if r.path.is_empty() { "<root>" } else { &r.path };
    if a.json {
        let j = json!({
            "path": r.path, "kind": r.kind, "max_abs_diff": r.max_abs_diff,
            "state_max_abs_diff": r.state_max_abs_diff,
            "output": pzt::probe::values::describe(&r.output),
            "saved_output": pzt::probe::values::describe(&r.saved_output),
            "parameters_loaded": r.loaded, "parameters_added": r.added,
        });
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
        return Ok(());
    }
    println!(
        "replayed {shown} ({}) on {}",
        r.kind,
        pzt::probe::values::describe(&r.input)
    );
    println!("  output  {}", pzt::probe::values::describe(&r.output));
    if r.added > 0 {
        println!(
            "  {} parameter(s) from the isolated submodel, {} added by the edits (seeded)",
            r.loaded, r.added
        );
    }
    match r.max_abs_diff {
        Some(d) => println!("max abs diff to the saved output: {d}"),
        None => println!(
            "the output's structure or shape changed: saved {}, now {}",
            pzt::probe::values::describe(&r.saved_output),
            pzt::probe::values::describe(&r.output)
        ),
    }
    if let Some(d) = r.state_max_abs_diff {
        println!("max abs diff to the saved state after the call: {d}");
    }
    Ok(())
}
