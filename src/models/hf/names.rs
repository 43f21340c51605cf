//! Hugging Face tensor names: each parameter the decoder builder made has a role
//! ([`crate::models::decoder::Role`]); the family names the tensor that holds it and how it is
//! laid out. The map is derived from the built tree, so it cannot drift from the builder.
//!
//! `L` is `model.layers.i` (`gpt_neox.layers.i` for GPT-NeoX):
//!
//! | role | Llama, Mistral, Gemma | GPT-NeoX |
//! |---|---|---|
//! | embedding | `model.embed_tokens.weight` | `gpt_neox.embed_in.weight` |
//! | attention norm | `L.input_layernorm` | same |
//! | MLP norm | `L.post_attention_layernorm` (Gemma 2/3: `L.pre_feedforward_layernorm`) | same |
//! | post norms (Gemma 2/3) | `L.post_attention_layernorm`, `L.post_feedforward_layernorm` | - |
//! | query/key norm (Gemma 3) | `L.self_attn.{q,k}_norm` | - |
//! | query, key, value | `L.self_attn.{q,k,v}_proj` | `L.attention.query_key_value` (fused) |
//! | output | `L.self_attn.o_proj` | `L.attention.dense` |
//! | gate, up, down | `L.mlp.{gate,up,down}_proj` | up, down: `L.mlp.dense_h_to_4h`, `L.mlp.dense_4h_to_h` |
//! | final norm | `model.norm` | `gpt_neox.final_layer_norm` |
//! | head (untied) | `lm_head.weight` | `embed_out.weight` |

use super::transform::Transform;
use super::{Arch, Family};
use crate::base::Result;
use crate::models::decoder::{NormSite, Projection, Role};
use crate::tree::Builder;

/// `(pzt label, HF tensor name, transform)` for every parameter of `arch`'s model.
pub fn weight_map(arch: &Arch) -> Result<Vec<(String, String, Transform)>> {
    let built = arch.build(&Builder::slots())?;
    Ok(names(arch, &built.parts))
}

/// The HF names of the parameters with these roles.
pub fn names(arch: &Arch, parts: &[(String, Role)]) -> Vec<(String, String, Transform)> {
    parts
        .iter()
        .map(|(label, role)| {
            let (name, tr) = name_of(arch, *role);
            (label.clone(), name, tr)
        })
        .collect()
}

fn suffix(bias: bool) -> &'static str {
    if bias {
        "bias"
    } else {
        "weight"
    }
}

fn name_of(a: &Arch, role: Role) -> (String, Transform) {
    let neox = a.family == Family::GptNeox;
    let d = &a.decoder;
    let layer = |i: usize| {
        if neox {
            format!("gpt_neox.layers.{i}")
        } else {
            format!("model.layers.{i}")
        }
    };
    match role {
        Role::Embedding if neox => ("gpt_neox.embed_in.weight".into(), Transform::Same),
        Role::Embedding => ("model.embed_tokens.weight".into(), Transform::Same),
        Role::LmHead => (
            if neox {
                "embed_out.weight"
            } else {
                "lm_head.weight"
            }
            .into(),
            Transform::Linear(d.d_model),
        ),
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
                NormSite::Final if neox => "gpt_neox.final_layer_norm".into(),
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
            let l = layer(i);
            let fused = |k: i64| {
                let tr = if bias {
                    Transform::QkvBias(k)
                } else {
                    Transform::QkvWeight(k)
                };
                (
                    format!("{l}.attention.query_key_value.{}", suffix(bias)),
                    tr,
                )
            };
            let (module, fan_in) = match (which, neox) {
                (Projection::Query, true) => return fused(0),
                (Projection::Key, true) => return fused(1),
                (Projection::Value, true) => return fused(2),
                (Projection::Output, true) => ("attention.dense", d.num_heads * d.head_dim),
                (Projection::Up, true) => ("mlp.dense_h_to_4h", d.d_model),
                (Projection::Down, true) => ("mlp.dense_4h_to_h", d.mlp_hidden),
                (Projection::Query, false) => ("self_attn.q_proj", d.d_model),
                (Projection::Key, false) => ("self_attn.k_proj", d.d_model),
                (Projection::Value, false) => ("self_attn.v_proj", d.d_model),
                (Projection::Output, false) => ("self_attn.o_proj", d.num_heads * d.head_dim),
                (Projection::Gate, _) => ("mlp.gate_proj", d.d_model),
                (Projection::Up, false) => ("mlp.up_proj", d.d_model),
                (Projection::Down, false) => ("mlp.down_proj", d.mlp_hidden),
            };
            let tr = if bias {
                Transform::Reshape
            } else {
                Transform::Linear(fan_in)
            };
            (format!("{l}.{module}.{}", suffix(bias)), tr)
        }
    }
}
