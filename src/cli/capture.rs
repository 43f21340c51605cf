//! `pzt capture MODEL --select SELECTOR (--tokens IDS | --text TEXT) --out FILE.safetensors
//! [--html FILE.html] [--mask FILE] [--set KEY=VALUE]... [--dtype D] [--device D]`.

use super::common::{check_outputs, lib_err, model_files, Failure};
use super::input::ModelInput;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Save the output of every layer a selector matches, on one token sequence (Penzai's
/// save_intermediates): one tensor per match, named by its path, axis names in the metadata.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    input: ModelInput,
    /// Which layers' outputs to save, e.g. 'blocks.*' or 'Attention'.
    #[arg(long = "select", value_name = "SELECTOR")]
    select: String,
    /// The safetensors file to write.
    #[arg(long, value_name = "FILE.safetensors")]
    out: PathBuf,
    /// Also write the arrays as an HTML page of heatmaps.
    #[arg(long, value_name = "FILE.html")]
    html: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let sel = pzt::tree::selector::Selector::parse(&a.select)
        .map_err(|e| Failure::Rendered(e.render(&a.select)))?;
    let outputs = a
        .input
        .outputs()
        .output("--out", &a.out)
        .output_opt("--html", a.html.as_ref());
    check_outputs(&outputs)?;
    let r = a.input.load()?;
    check_outputs(&outputs.inputs(model_files(&r.model)))?;
    let (m, ids, side, device) = (&r.model, &r.ids, &r.side, r.device);
    let selection = sel.select(&m.tree);
    let (arrays, _) =
        pzt::probe::capture(&selection, ids, &m.axes, side, device).map_err(|e| match e {
            pzt::Error::Select(msg) => Failure::BadInput(format!("--select `{}`: {msg}", a.select)),
            other => lib_err(other),
        })?;
    let tokens: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let meta = BTreeMap::from([
        ("model".to_string(), a.input.model.display().to_string()),
        ("selector".to_string(), a.select.clone()),
        ("tokens".to_string(), tokens.join(" ")),
    ]);
    let named: Vec<(String, pzt::named::NamedTensor)> = arrays
        .iter()
        .map(|c| (c.name.clone(), c.value.clone()))
        .collect();
    pzt::run::checkpoint::arrays::write(&a.out, &named, &meta).map_err(lib_err)?;
    for c in &arrays {
        println!("{}  {}", c.name, c.value.describe());
    }
    println!("wrote {} ({} arrays)", a.out.display(), arrays.len());
    if let Some(h) = &a.html {
        let labels: Vec<String> = ids
            .iter()
            .map(|&i| match &m.tokenizer {
                Some(t) => t.decode(&[i]),
                None => i.to_string(),
            })
            .collect();
        let mut views = vec![];
        for c in &arrays {
            let v = pzt::viz::ArrayView::new(
                &c.name,
                c.value.tensor(),
                c.value.names(),
                pzt::viz::model::MAX_ARRAY_VALUES,
            )
            .map_err(lib_err)?
            .label(&m.axes.seq, labels.clone())
            .label("kv_seq", labels.clone());
            views.push(v);
        }
        let title = format!("pzt capture · {} · {}", a.input.model.display(), a.select);
        let sub = format!("{} tokens: {}", ids.len(), tokens.join(" "));
        let data = pzt::viz::arrays_data(&title, &sub, &views);
        pzt::viz::page::write(h, &title, &data).map_err(lib_err)?;
        println!("wrote {}", h.display());
    }
    Ok(())
}
