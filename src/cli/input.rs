//! What `pzt logits`, `pzt capture` and `pzt isolate` share: the model, one token sequence, an
//! attention mask, recipe edits, dtype and device, and loading them.

use super::common::{lib_err, model_tokens, parse_device, parse_dtype, Failure};
use std::path::{Path, PathBuf};

/// A model and the one token sequence it runs on.
#[derive(clap::Args)]
pub struct ModelInput {
    /// A recipe, a HuggingFace model directory, a run checkpoint directory, or a run directory
    /// (its newest checkpoint; RUN@best, RUN@latest).
    pub model: PathBuf,
    /// Token ids, e.g. "1 2 3".
    #[arg(long, conflicts_with = "text")]
    pub tokens: Option<String>,
    /// Text, tokenized with the model's tokenizer.json (or the recipe's tokenizer);
    /// `--prompt` is the same.
    #[arg(long, visible_alias = "prompt")]
    pub text: Option<String>,
    /// An attention mask: a safetensors file with one boolean tensor `[seq, kv_seq]` (true =
    /// attend), passed as the side input `attn_mask` that `ApplyExplicitAttentionMask` reads.
    #[arg(long, value_name = "FILE")]
    pub mask: Option<PathBuf>,
    /// Override a key of the model's recipe: KEY.PATH=VALUE (e.g. a `patch` list).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Parameter dtype: float32, bfloat16, float16 (default: the model's).
    #[arg(long)]
    pub dtype: Option<String>,
    /// auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// A loaded model, its input tokens and side inputs, and the device they are on.
pub struct Ready {
    pub model: pzt::loader::Loaded,
    pub ids: Vec<i64>,
    pub side: pzt::tree::SideInputs,
    pub device: tch::Device,
}

impl ModelInput {
    /// The command's inputs named on the command line (the model and the mask), to check its
    /// outputs against.
    pub fn outputs(&self) -> pzt::base::outputs::Outputs {
        pzt::base::outputs::Outputs::new()
            .input(&self.model)
            .inputs(self.mask.iter())
    }

    /// Loads the model, reads the tokens (and the mask, which the model must read).
    pub fn load(&self) -> Result<Ready, Failure> {
        let device = parse_device(&self.device)?;
        let model =
            super::common::load_with(&self.model, &self.set, parse_dtype(&self.dtype)?, device)
                .map_err(lib_err)?;
        let ids = model_tokens(&model, &self.tokens, &self.text)?;
        if self.mask.is_some() {
            check_reads_mask(&model.tree)?;
        }
        let side = mask_side_inputs(self.mask.as_deref(), ids.len(), device)?;
        Ok(Ready {
            model,
            ids,
            side,
            device,
        })
    }
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
    let (arrays, _) = pzt::run::checkpoint::arrays::read(path).map_err(lib_err)?;
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
