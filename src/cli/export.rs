//! `pzt export CHECKPOINT --hf OUT [--dtype D]`.

use super::common::{lib_err, parse_dtype, Failure};
use std::path::PathBuf;

/// Write a checkpoint (or an HF model directory) as a HuggingFace model directory.
#[derive(clap::Args)]
pub struct Args {
    /// A run checkpoint directory whose recipe loads an HF model (`[model] hf = ...`), or an
    /// HF model directory.
    checkpoint: PathBuf,
    /// The output directory.
    #[arg(long = "hf")]
    hf: PathBuf,
    /// float32 (default), bfloat16 or float16.
    #[arg(long)]
    dtype: Option<String>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let kind = parse_dtype(&a.dtype)?.unwrap_or(tch::Kind::Float);
    let m = pzt::loader::load(
        &a.checkpoint,
        &pzt::builtin_registry(),
        Some(tch::Kind::Float),
        tch::Device::Cpu,
    )
    .map_err(lib_err)?;
    let Some(src) = m.hf_dir.clone() else {
        return Err(Failure::BadInput(format!("{}: export needs a model loaded from a HuggingFace directory (`[model] hf = \"...\"` in its recipe)", a.checkpoint.display())));
    };
    let cfg = std::fs::read_to_string(src.join("config.json"))
        .map_err(|e| Failure::BadInput(format!("{}: {e}", src.join("config.json").display())))?;
    let arch = pzt::models::hf::parse(&cfg, &src.display().to_string()).map_err(lib_err)?;
    let hf = &a.hf;
    if hf.exists()
        && std::fs::read_dir(hf)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return Err(Failure::BadInput(format!(
            "{} exists and is not empty; choose a new directory",
            hf.display()
        )));
    }
    pzt::models::hf::export(&m.tree, &arch, &cfg, hf, kind).map_err(lib_err)?;
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ] {
        if src.join(f).is_file() {
            let _ = std::fs::copy(src.join(f), hf.join(f));
        }
    }
    println!(
        "wrote {} ({} layout: config.json, model.safetensors)",
        hf.display(),
        arch.model_type
    );
    Ok(())
}
