//! Qwen 2 and 2.5 (`model_type = "qwen2"`) and Qwen 3 (`"qwen3"`): Llama's layout and keys,
//! with
//!
//! - Qwen 2: biases on the query, key and value projections and none on the output (the
//!   architecture, not a config key);
//! - Qwen 3: an RMSNorm over each head of the queries and keys before RoPE
//!   (`self_attn.{q,k}_norm`), an explicit `head_dim`, and `attention_bias` on all four
//!   projections;
//! - both: sliding attention on the layers `layer_types` names `sliding_attention`, or, in
//!   configs without it, from layer `max_window_layers` on when `use_sliding_window` is set;
//!   without `use_sliding_window` no layer slides (as transformers reads these configs).

use super::{llama, Converter};
use crate::base::Result;
use crate::layers::moe::{ExpertActivation, RouteOrder};
use crate::models::decoder::MoeConfig;
use crate::models::hf::config::{sliding_layers, Cfg, Shared};
use crate::models::hf::Family;

pub const QWEN2: Converter = Converter {
    family: Family::Qwen2,
    model_type: "qwen2",
    tied_by_default: false,
    convert: qwen2,
    ignored: &[],
    name_of: llama::name_of,
};

pub const QWEN3_MOE: Converter = Converter {
    family: Family::Qwen3Moe,
    model_type: "qwen3_moe",
    tied_by_default: false,
    convert: qwen3_moe,
    ignored: &["output_router_logits"],
    name_of: llama::name_of,
};

pub const QWEN3: Converter = Converter {
    family: Family::Qwen3,
    model_type: "qwen3",
    tied_by_default: false,
    convert: qwen3,
    ignored: &[],
    name_of: llama::name_of,
};

fn qwen2(c: &Cfg, s: &mut Shared) -> Result<()> {
    llama::convert(c, s)?;
    s.decoder.qkv_bias = true;
    s.decoder.output_bias = false;
    windows(c, s)
}

fn qwen3(c: &Cfg, s: &mut Shared) -> Result<()> {
    llama::convert(c, s)?;
    s.decoder.qk_norm = true;
    windows(c, s)
}

/// Qwen 3's attention, and experts in the layers `decoder_sparse_step` and `mlp_only_layers`
/// say (the others a dense MLP of `intermediate_size`).
fn qwen3_moe(c: &Cfg, s: &mut Shared) -> Result<()> {
    qwen3(c, s)?;
    let n = s.window.len();
    let step = c.int("decoder_sparse_step")?.unwrap_or(1);
    if step < 1 {
        return Err(c.error(format!(
            "`decoder_sparse_step` must be at least 1, got {step}"
        )));
    }
    let dense: Vec<i64> = match c.get("mlp_only_layers") {
        None => vec![],
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_i64()).collect::<Option<Vec<i64>>>())
            .ok_or_else(|| {
                c.error(format!(
                    "`mlp_only_layers` = {v} should be a list of layer numbers"
                ))
            })?,
    };
    let layers = (0..n as i64)
        .map(|i| !dense.contains(&i) && (i + 1) % step == 0)
        .collect();
    let experts = match c.int("num_experts")? {
        Some(e) => e,
        None => c.req_int("num_local_experts")?,
    };
    let renormalize = c.boolean("norm_topk_prob")?.unwrap_or(false);
    s.decoder.moe = Some(moe_config(
        c,
        experts,
        "moe_intermediate_size",
        renormalize,
        layers,
    )?);
    Ok(())
}

/// A softmax-then-top-k mixture of SwiGLU experts (Qwen3-MoE, Mixtral) in `layers`.
pub fn moe_config(
    c: &Cfg,
    experts: i64,
    hidden_key: &str,
    renormalize: bool,
    layers: Vec<bool>,
) -> Result<MoeConfig> {
    let top_k = c.req_int("num_experts_per_tok")?;
    if experts < 1 || !(1..=experts).contains(&top_k) {
        return Err(c.error(format!(
            "`num_experts_per_tok` = {top_k} must be 1 to the number of experts ({experts})"
        )));
    }
    let hidden = c.req_int(hidden_key)?;
    if hidden < 1 {
        return Err(c.error(format!("`{hidden_key}` must be at least 1, got {hidden}")));
    }
    Ok(MoeConfig {
        num_experts: experts,
        top_k,
        hidden,
        order: RouteOrder::SoftmaxThenTopK,
        renormalize,
        activation: ExpertActivation::Gated(s_act(c)?),
        expert_bias: false,
        router_bias: false,
        aux_loss_coef: aux_loss_coef(c)?,
        layers,
    })
}

fn s_act(c: &Cfg) -> Result<crate::layers::misc::Activation> {
    crate::models::hf::config::act(c, "hidden_act", c.string("hidden_act").unwrap_or("silu"))
}

/// `router_aux_loss_coef` (default 0.001, as transformers'), finite and >= 0.
pub fn aux_loss_coef(c: &Cfg) -> Result<f64> {
    let v = c.float("router_aux_loss_coef")?.unwrap_or(0.001);
    if !(v.is_finite() && v >= 0.0) {
        return Err(c.error(format!(
            "`router_aux_loss_coef` must be a finite number >= 0, got {v}"
        )));
    }
    Ok(v)
}

/// The sliding layers and their window.
fn windows(c: &Cfg, s: &mut Shared) -> Result<()> {
    let on = c.boolean("use_sliding_window")?.unwrap_or(false);
    let window = c.int("sliding_window")?;
    let from = c.int("max_window_layers")?.unwrap_or(28);
    let n = s.window.len();
    let sliding = sliding_layers(c, n, |i| on && window.is_some() && i as i64 >= from)?;
    for (w, slides) in s.window.iter_mut().zip(sliding) {
        // transformers drops the window when `use_sliding_window` is off, whatever
        // `layer_types` says.
        if slides && on {
            *w = Some(window.ok_or_else(|| c.error("sliding layers need `sliding_window`"))?);
        }
    }
    Ok(())
}
