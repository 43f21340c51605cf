//! Llama (`model_type = "llama"`): RMSNorm, SwiGLU, rotary attention with grouped key/value
//! heads. Its checkpoint layout (`model.layers.i.self_attn.q_proj`, ...) is also Mistral's and
//! Gemma's:
//!
//! | role | tensor (`L` is `model.layers.i`) |
//! |---|---|
//! | embedding | `model.embed_tokens.weight` |
//! | attention norm | `L.input_layernorm` |
//! | MLP norm | `L.post_attention_layernorm` (with sandwich norms: `L.pre_feedforward_layernorm`) |
//! | post norms (sandwich) | `L.post_attention_layernorm`, `L.post_feedforward_layernorm` |
//! | query/key norm | `L.self_attn.{q,k}_norm` |
//! | query, key, value, output | `L.self_attn.{q,k,v,o}_proj` |
//! | gate, up, down | `L.mlp.{gate,up,down}_proj` |
//! | final norm | `model.norm` |
//! | head (untied) | `lm_head.weight` |

use super::{projection, suffix, Converter};
use crate::base::Result;
use crate::models::decoder::{NormSite, Projection, Role};
use crate::models::hf::config::{act, Cfg, Shared};
use crate::models::hf::transform::Transform;
use crate::models::hf::{Arch, Family};

pub const LLAMA: Converter = Converter {
    family: Family::Llama,
    model_type: "llama",
    tied_by_default: false,
    convert,
    ignored: &["head_dim"],
    name_of,
};

/// Llama's own keys (Mistral reads the same ones, and its sliding window).
pub fn convert(c: &Cfg, s: &mut Shared) -> Result<()> {
    let d = &mut s.decoder;
    d.norm_eps = c.float("rms_norm_eps")?.unwrap_or(1e-6);
    d.activation = act(c, "hidden_act", c.string("hidden_act").unwrap_or("silu"))?;
    let ab = c.boolean("attention_bias")?.unwrap_or(false);
    d.qkv_bias = ab;
    d.output_bias = ab;
    d.mlp_bias = c.boolean("mlp_bias")?.unwrap_or(false);
    Ok(())
}

/// The Llama layout's tensor for a role.
pub fn name_of(a: &Arch, role: Role) -> (String, Transform) {
    let d = &a.decoder;
    let layer = |i: usize| format!("model.layers.{i}");
    match role {
        Role::Embedding => ("model.embed_tokens.weight".into(), Transform::Same),
        Role::LmHead => ("lm_head.weight".into(), Transform::Linear(d.d_model)),
        Role::LmHeadBias => ("lm_head.bias".into(), Transform::Reshape),
        Role::Norm { site, bias } => {
            let module = match site {
                NormSite::Attention(i) => format!("{}.input_layernorm", layer(i)),
                NormSite::Mlp(i) if d.sandwich_norms => {
                    format!("{}.pre_feedforward_layernorm", layer(i))
                }
                NormSite::Mlp(i) | NormSite::AfterAttention(i) => {
                    format!("{}.post_attention_layernorm", layer(i))
                }
                NormSite::AfterMlp(i) => format!("{}.post_feedforward_layernorm", layer(i)),
                NormSite::Query(i) => format!("{}.self_attn.q_norm", layer(i)),
                NormSite::Key(i) => format!("{}.self_attn.k_norm", layer(i)),
                NormSite::Final => "model.norm".into(),
            };
            let tr = if a.norm_plus_one && !bias {
                Transform::PlusOne
            } else {
                Transform::Same
            };
            (format!("{module}.{}", suffix(bias)), tr)
        }
        Role::Projection {
            layer: i,
            which,
            bias,
        } => {
            let (module, fan_in) = match which {
                Projection::Query => ("self_attn.q_proj", d.d_model),
                Projection::Key => ("self_attn.k_proj", d.d_model),
                Projection::Value => ("self_attn.v_proj", d.d_model),
                Projection::Output => ("self_attn.o_proj", d.num_heads * d.head_dim),
                Projection::Gate => ("mlp.gate_proj", d.d_model),
                Projection::Up => ("mlp.up_proj", d.d_model),
                Projection::Down => ("mlp.down_proj", d.mlp_hidden),
            };
            projection(&layer(i), module, fan_in, bias)
        }
        _ => moe_name_of(a, role, "mlp", ["gate_proj", "up_proj", "down_proj"]),
    }
}

/// The tensors of a mixture of experts stored expert by expert, as Qwen3-MoE (`block` =
/// `mlp`, `names` = gate_proj, up_proj, down_proj) and Mixtral (`block_sparse_moe`, w1, w3,
/// w2) store them: `L.<block>.gate` (the router) and `L.<block>.experts.<e>.<name>`; and the
/// attention sinks, `L.self_attn.sinks`.
pub fn moe_name_of(a: &Arch, role: Role, block: &str, names: [&str; 3]) -> (String, Transform) {
    let d = &a.decoder;
    let layer = |i: usize| format!("model.layers.{i}");
    let hidden = d.moe.as_ref().map_or(d.mlp_hidden, |m| m.hidden);
    let pick = |which: Projection| match which {
        Projection::Gate => (names[0], d.d_model),
        Projection::Up => (names[1], d.d_model),
        _ => (names[2], hidden),
    };
    match role {
        Role::Router { layer: i, bias } => {
            let tr = if bias {
                Transform::Reshape
            } else {
                Transform::Router(d.d_model)
            };
            (format!("{}.{block}.gate.{}", layer(i), suffix(bias)), tr)
        }
        Role::Experts { layer: i, .. } => (
            format!("{}.{block}.experts", layer(i)),
            Transform::PerExpert,
        ),
        Role::Expert {
            layer: i,
            which,
            bias,
            index,
        } => {
            let (name, fan_in) = pick(which);
            let tr = if bias {
                Transform::ExpertBias { index }
            } else {
                Transform::Expert { index, fan_in }
            };
            (
                format!(
                    "{}.{block}.experts.{index}.{name}.{}",
                    layer(i),
                    suffix(bias)
                ),
                tr,
            )
        }
        Role::Sinks(i) => (format!("{}.self_attn.sinks", layer(i)), Transform::Reshape),
        _ => ("".into(), Transform::Same),
    }
}
