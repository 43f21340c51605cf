//! `pzt logits MODEL (--tokens IDS | --text TEXT) [--out FILE] [--mask FILE] [--set KEY=VALUE]...
//! [--dtype D] [--device D]`.

use super::common::{check_outputs, lib_err, model_files, Failure};
use super::input::ModelInput;
use std::path::PathBuf;

/// Compute the logits of a token sequence (top-5 next tokens per position, or a safetensors
/// file with `logits` [1, T, vocab] float32).
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    input: ModelInput,
    /// Write the logits to this safetensors file.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let outputs = a.input.outputs().output_opt("--out", a.out.as_ref());
    check_outputs(&outputs)?;
    let r = a.input.load()?;
    check_outputs(&outputs.inputs(model_files(&r.model)))?;
    let (m, ids, side, device) = (&r.model, &r.ids, &r.side, r.device);
    let logits =
        pzt::models::generate::logits_with(&m.tree, ids, &m.axes, side, device).map_err(lib_err)?;
    match a.out {
        Some(path) => {
            let t = logits.to_device(tch::Device::Cpu).unsqueeze(0).contiguous();
            pzt::base::outputs::write_with(&path, |tmp| {
                tch::Tensor::write_safetensors(&[("logits", &t)], tmp).map_err(|e| {
                    pzt::Error::Torch {
                        context: format!("write {}", path.display()),
                        source: e,
                    }
                })
            })
            .map_err(lib_err)?;
            println!("wrote {} (logits, float32, {:?})", path.display(), t.size());
        }
        None => {
            let top = logits.topk(5, -1, true, true);
            // One write of the whole table: a reader that stops early (`| head -3`) then
            // finds it all in the pipe, rather than closing it under a later line.
            let mut table = String::new();
            for (i, id) in ids.iter().enumerate() {
                let v: Vec<f64> = Vec::try_from(top.0.get(i as i64).to_kind(tch::Kind::Double))
                    .unwrap_or_default();
                let k: Vec<i64> = Vec::try_from(top.1.get(i as i64)).unwrap_or_default();
                let show = |t: i64| {
                    m.tokenizer
                        .as_ref()
                        .map(|tok| format!("{t} {:?}", tok.decode(&[t])))
                        .unwrap_or_else(|| t.to_string())
                };
                let row: Vec<String> = k
                    .iter()
                    .zip(&v)
                    .map(|(t, l)| format!("{} ({l:.3})", show(*t)))
                    .collect();
                table.push_str(&format!(
                    "{i:>4} {:>12}  ->  {}\n",
                    show(*id),
                    row.join(", ")
                ));
            }
            print!("{table}");
        }
    }
    Ok(())
}
