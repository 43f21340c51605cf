//! Cohere Command-R (`model_type = "cohere"`): Llama's tensor names and gated MLP, in a
//! parallel block with one norm feeding both branches, `x + attn(ln(x)) + mlp(ln(x))`, where
//! every norm is Cohere's LayerNorm (the mean subtracted, a scale, no bias; `layer_norm_eps`);
//! RoPE on adjacent pairs of dims (GPT-J's layout) with a default base of 500000; biases on all
//! four attention projections with `attention_bias`; the logits multiplied by `logit_scale`
//! (default 0.0625); tied embeddings by default; and optionally (`use_qk_norm`) a LayerNorm
//! over each head of the queries and keys before RoPE, with a scale per head
//! (`self_attn.{q,k}_norm.weight`, `[heads, head_dim]`).

use super::{llama, Converter};
use crate::base::Result;
use crate::models::decoder::{NormSite, Role};
use crate::models::hf::config::{act, Cfg, Shared};
use crate::models::hf::transform::Transform;
use crate::models::hf::{Arch, Family};

pub const COHERE: Converter = Converter {
    family: Family::Cohere,
    model_type: "cohere",
    tied_by_default: true,
    convert,
    // Command-R's configs carry the tokenizer's length limit; the model never reads it.
    ignored: &["model_max_length"],
    name_of,
};

/// `CohereConfig.default_theta`: the RoPE base when the config names none.
const DEFAULT_THETA: f64 = 500_000.0;

fn convert(c: &Cfg, s: &mut Shared) -> Result<()> {
    let d = &mut s.decoder;
    d.layer_norm = true;
    d.layer_norm_bias = false;
    d.norm_eps = c.float("layer_norm_eps")?.unwrap_or(1e-5);
    d.activation = act(c, "hidden_act", c.string("hidden_act").unwrap_or("silu"))?;
    let ab = c.boolean("attention_bias")?.unwrap_or(false);
    d.qkv_bias = ab;
    d.output_bias = ab;
    d.parallel_residual = true;
    d.shared_norm = true;
    d.rope_interleaved = true;
    d.qk_norm = c.boolean("use_qk_norm")?.unwrap_or(false);
    d.qk_norm_per_head = d.qk_norm;
    let scale = c.float("logit_scale")?.unwrap_or(0.0625);
    d.logit_scale = (scale != 1.0).then_some(scale);
    let named = |k: &str| c.get(k).and_then(|v| v.get("rope_theta")).is_some();
    if c.get("rope_theta").is_none() && !named("rope_parameters") && !named("rope_scaling") {
        s.rope_theta = DEFAULT_THETA;
    }
    Ok(())
}

/// Llama's names; the query and key norms hold a weight per head.
fn name_of(a: &Arch, role: Role) -> (String, Transform) {
    let (name, tr) = llama::name_of(a, role);
    match role {
        Role::Norm {
            site: NormSite::Query(_) | NormSite::Key(_),
            ..
        } => (name, Transform::PerHead(a.decoder.head_dim)),
        _ => (name, tr),
    }
}
