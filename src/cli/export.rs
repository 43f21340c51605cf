//! `pzt export CHECKPOINT (--hf OUT | --peft OUT) [--dtype D]`.

use super::common::{lib_err, parse_dtype, Failure};
use pzt::layers::toolshed::{merge_adapters, without_checkpointing};
use std::path::{Path, PathBuf};

/// Write a checkpoint (or an HF model directory) as a HuggingFace model directory (LoRA
/// adapters merged into the weights), or its LoRA adapters as a PEFT adapter directory.
#[derive(clap::Args)]
pub struct Args {
    /// A run checkpoint directory whose recipe loads an HF model (`[model] hf = ...`), or an
    /// HF model directory.
    checkpoint: PathBuf,
    /// Write the model as an HF model directory here (adapters merged: W + scale B A).
    #[arg(long = "hf", conflicts_with = "peft", required_unless_present = "peft")]
    hf: Option<PathBuf>,
    /// Write the LoRA/DoRA adapters as a PEFT adapter directory here.
    #[arg(long = "peft")]
    peft: Option<PathBuf>,
    /// float32 (default), bfloat16 or float16 (for --hf).
    #[arg(long)]
    dtype: Option<String>,
}

/// The tokenizer and generation files an export carries along.
const COMPANIONS: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];

fn fresh_dir(out: &Path) -> Result<(), Failure> {
    if out.exists() && !out.is_dir() {
        return Err(Failure::BadInput(format!(
            "{} exists and is not a directory; choose a new directory",
            out.display()
        )));
    }
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Failure::BadInput(format!(
            "{} exists and is not empty; choose a new directory",
            out.display()
        )));
    }
    Ok(())
}

fn copy_companions(src: &Path, tokenizer: Option<&Path>, out: &Path) -> Result<(), Failure> {
    // (from, name in OUT): the run's tokenizer file first, then the companions of its
    // directory and of the model directory.
    let mut files: Vec<(PathBuf, String)> = vec![];
    if let Some(t) = tokenizer {
        files.push((t.to_path_buf(), "tokenizer.json".into()));
    }
    let dirs = tokenizer.and_then(Path::parent).into_iter().chain([src]);
    for d in dirs {
        files.extend(COMPANIONS.iter().map(|f| (d.join(f), f.to_string())));
    }
    for (from, name) in files {
        let to = out.join(&name);
        if from.is_file() && !to.exists() {
            std::fs::copy(&from, &to).map_err(|e| {
                Failure::BadInput(pzt::base::error::io_message(&to.display().to_string(), &e))
            })?;
        }
    }
    Ok(())
}

pub fn run(a: Args) -> Result<(), Failure> {
    let kind = parse_dtype(&a.dtype)?.unwrap_or(tch::Kind::Float);
    let out =
        a.hf.clone()
            .or(a.peft.clone())
            .ok_or_else(|| Failure::BadInput("export needs --hf OUT or --peft OUT".into()))?;
    fresh_dir(&out)?;
    let m = super::common::load_with(&a.checkpoint, &[], Some(tch::Kind::Float), tch::Device::Cpu)
        .map_err(lib_err)?;
    let Some(src) = m.hf_dir.clone() else {
        return Err(Failure::BadInput(format!("{}: export needs a model loaded from a HuggingFace directory (`[model] hf = \"...\"` in its recipe)", a.checkpoint.display())));
    };
    let cfg = pzt::base::files::read_small_file(&src.join("config.json")).map_err(lib_err)?;
    let arch = pzt::models::hf::parse(&cfg, &src.display().to_string()).map_err(lib_err)?;
    let tree = without_checkpointing(&m.tree).map_err(lib_err)?;
    let tokenizer = m.tokenizer_path.as_deref();
    if let Some(peft) = &a.peft {
        let base = src.canonicalize().unwrap_or(src.clone());
        pzt::models::hf::peft::write(&tree, &arch, peft, &base.display().to_string())
            .map_err(lib_err)?;
        copy_companions(&src, tokenizer, peft)?;
        println!(
            "wrote {} (PEFT LoRA adapter for {}: adapter_config.json, adapter_model.safetensors)",
            peft.display(),
            base.display()
        );
        return Ok(());
    }
    let merged = merge_adapters(&tree).map_err(lib_err)?;
    pzt::models::hf::export(&merged, &arch, &cfg, &out, kind).map_err(lib_err)?;
    copy_companions(&src, tokenizer, &out)?;
    println!(
        "wrote {} ({} layout: config.json, model.safetensors{})",
        out.display(),
        arch.model_type,
        if merged.same_structure(&tree) {
            ""
        } else {
            "; LoRA adapters merged into the weights"
        }
    );
    Ok(())
}
