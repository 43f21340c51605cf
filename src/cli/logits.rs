//! `pzt logits MODEL (--tokens IDS | --text TEXT) [--out FILE] [--mask FILE] [--set KEY=VALUE]...
//! [--dtype D] [--device D]`.

use super::common::{lib_err, model_tokens, parse_device, parse_dtype, Failure};
use std::path::{Path, PathBuf};

/// Compute the logits of a token sequence (top-5 next tokens per position, or a safetensors
/// file with `logits` [1, T, vocab] float32).
#[derive(clap::Args)]
pub struct Args {
    /// An HF model directory, a recipe, or a run checkpoint directory.
    model: PathBuf,
    /// Token ids, e.g. "1 2 3".
    #[arg(long, conflicts_with = "text")]
    tokens: Option<String>,
    /// Text, tokenized with the model's tokenizer.json (or the recipe's tokenizer);
    /// `--prompt` is the same.
    #[arg(long, visible_alias = "prompt")]
    text: Option<String>,
    /// Write the logits to this safetensors file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// An attention mask: a safetensors file with one boolean tensor `[seq, kv_seq]` (true =
    /// attend), passed as the side input `attn_mask` that `ApplyExplicitAttentionMask` reads.
    #[arg(long, value_name = "FILE")]
    mask: Option<PathBuf>,
    /// Override a key of the model's recipe: KEY.PATH=VALUE (e.g. a `patch` list).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Parameter dtype: float32, bfloat16, float16 (default: the checkpoint's).
    #[arg(long)]
    dtype: Option<String>,
    /// auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// The side inputs for `--mask FILE` on a sequence of `n` tokens (none without a mask).
pub fn mask_side_inputs(
    mask: Option<&Path>,
    n: usize,
    device: tch::Device,
) -> Result<pzt::tree::SideInputs, Failure> {
    let side = pzt::tree::SideInputs::new();
    let Some(path) = mask else {
        return Ok(side);
    };
    let shown = path.display();
    let (arrays, _) = pzt::store::arrays::read(path).map_err(lib_err)?;
    let t = match arrays.as_slice() {
        [(_, t)] => t.clone(),
        many => many
            .iter()
            .find(|(k, _)| k == "attn_mask" || k == "mask")
            .map(|(_, t)| t.clone())
            .ok_or_else(|| {
                Failure::BadInput(format!(
                    "--mask {shown}: expected one tensor (or one named `attn_mask`), found {}",
                    many.len()
                ))
            })?,
    };
    let t = t.tensor();
    if t.kind() != tch::Kind::Bool {
        return Err(Failure::BadInput(format!(
            "--mask {shown}: the mask must be boolean (true = attend), got {:?}",
            t.kind()
        )));
    }
    let n = n as i64;
    if t.size() != [n, n] {
        return Err(Failure::BadInput(format!(
            "--mask {shown}: the mask has shape {:?}; the input has {n} tokens, so it must be [{n}, {n}] ([seq, kv_seq])",
            t.size()
        )));
    }
    let t = t.to_device(device);
    let named = pzt::named::NamedTensor::wrap(t, &["seq", "kv_seq"]).map_err(lib_err)?;
    Ok(side.with_tensor("attn_mask", named))
}

/// Checks that a model given `--mask` reads it.
pub fn check_reads_mask(tree: &pzt::tree::Node) -> Result<(), Failure> {
    if pzt::tree::select(tree)
        .at_instances_of("ApplyExplicitAttentionMask")
        .count()
        == 0
    {
        return Err(Failure::BadInput(
            "--mask: this model has no ApplyExplicitAttentionMask layer to read it; replace its causal masks first, e.g. --set 'patch=[{select = \"ApplyCausalAttentionMask\", action = \"replace\", with = {type = \"ApplyExplicitAttentionMask\"}}]'".into(),
        ));
    }
    Ok(())
}

pub fn run(a: Args) -> Result<(), Failure> {
    let device = parse_device(&a.device)?;
    let m = pzt::loader::load_with(
        &a.model,
        &a.set,
        &pzt::builtin_registry(),
        parse_dtype(&a.dtype)?,
        device,
    )
    .map_err(lib_err)?;
    let ids = model_tokens(&m, &a.tokens, &a.text)?;
    if a.mask.is_some() {
        check_reads_mask(&m.tree)?;
    }
    let side = mask_side_inputs(a.mask.as_deref(), ids.len(), device)?;
    let logits = pzt::models::generate::logits_with(&m.tree, &ids, &m.axes, &side, device)
        .map_err(lib_err)?;
    match a.out {
        Some(path) => {
            let t = logits.to_device(tch::Device::Cpu).unsqueeze(0).contiguous();
            tch::Tensor::write_safetensors(&[("logits", &t)], &path).map_err(|e| {
                lib_err(pzt::Error::Torch {
                    context: format!("write {}", path.display()),
                    source: e,
                })
            })?;
            println!("wrote {} (logits, float32, {:?})", path.display(), t.size());
        }
        None => {
            let top = logits.topk(5, -1, true, true);
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
                println!("{i:>4} {:>12}  ->  {}", show(*id), row.join(", "));
            }
        }
    }
    Ok(())
}
