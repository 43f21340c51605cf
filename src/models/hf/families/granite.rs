//! Granite (`model_type = "granite"`): Llama's layout and keys, and four multipliers: the
//! embeddings are multiplied by `embedding_multiplier`, the attention logits scaled by
//! `attention_multiplier` (instead of `1/sqrt(head_dim)`), each residual branch multiplied by
//! `residual_multiplier` before it is added, and the logits divided by `logits_scaling`.

use super::{llama, Converter};
use crate::base::Result;
use crate::models::hf::config::{Cfg, Shared};
use crate::models::hf::Family;

pub const GRANITE: Converter = Converter {
    family: Family::Granite,
    model_type: "granite",
    tied_by_default: false,
    convert,
    ignored: &[],
    name_of: llama::name_of,
};

fn convert(c: &Cfg, s: &mut Shared) -> Result<()> {
    llama::convert(c, s)?;
    let d = &mut s.decoder;
    let factor = |k: &str| -> Result<Option<f64>> {
        match c.float(k)? {
            Some(f) if !(f.is_finite() && f > 0.0) => {
                Err(c.error(format!("`{k}` must be a positive number, got {f}")))
            }
            other => Ok(other.filter(|&f| f != 1.0)),
        }
    };
    d.embed_scale = factor("embedding_multiplier")?;
    // transformers scales the logits by `attention_multiplier` itself (default 1).
    d.query_scale = Some(factor("attention_multiplier")?.unwrap_or(1.0));
    d.residual_scale = factor("residual_multiplier")?;
    d.logit_scale = factor("logits_scaling")?.map(|f| 1.0 / f);
    Ok(())
}
