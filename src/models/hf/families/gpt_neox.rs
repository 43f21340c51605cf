//! GPT-NeoX (`model_type = "gpt_neox"`, Pythia): LayerNorm, a plain GELU MLP with biases,
//! parallel residuals, a fused query/key/value projection, and rotary embeddings on part of
//! each head (`rotary_pct`, or `partial_rotary_factor` in `rope_parameters`).
//!
//! | role | tensor (`L` is `gpt_neox.layers.i`) |
//! |---|---|
//! | embedding | `gpt_neox.embed_in.weight` |
//! | attention norm, MLP norm | `L.input_layernorm`, `L.post_attention_layernorm` |
//! | query, key, value | `L.attention.query_key_value` (fused, per head) |
//! | output | `L.attention.dense` |
//! | up, down | `L.mlp.dense_h_to_4h`, `L.mlp.dense_4h_to_h` |
//! | final norm | `gpt_neox.final_layer_norm` |
//! | head (untied) | `embed_out.weight` |

use super::{projection, suffix, Converter};
use crate::base::Result;
use crate::models::decoder::{NormSite, Projection, Role};
use crate::models::hf::config::{act, Cfg, Shared};
use crate::models::hf::transform::Transform;
use crate::models::hf::{Arch, Family};

pub const GPT_NEOX: Converter = Converter {
    family: Family::GptNeox,
    model_type: "gpt_neox",
    tied_by_default: false,
    convert,
    ignored: &[],
    name_of,
};

fn convert(c: &Cfg, s: &mut Shared) -> Result<()> {
    let d = &mut s.decoder;
    d.layer_norm = true;
    d.norm_eps = c.float("layer_norm_eps")?.unwrap_or(1e-5);
    d.gated_mlp = false;
    d.activation = act(c, "hidden_act", c.string("hidden_act").unwrap_or("gelu"))?;
    let ab = c.boolean("attention_bias")?.unwrap_or(true);
    d.qkv_bias = ab;
    d.output_bias = ab;
    d.mlp_bias = true;
    d.parallel_residual = c.boolean("use_parallel_residual")?.unwrap_or(true);
    if let Some(base) = c.float("rotary_emb_base")? {
        s.rope_theta = base;
    }
    let pct = c.float("rotary_pct")?.or(s.partial.take()).unwrap_or(1.0);
    let dims = ((d.head_dim as f64) * pct) as i64;
    if dims < d.head_dim {
        d.rotary_dims = Some(dims);
    }
    Ok(())
}

fn name_of(a: &Arch, role: Role) -> (String, Transform) {
    let d = &a.decoder;
    let layer = |i: usize| format!("gpt_neox.layers.{i}");
    match role {
        Role::Embedding => ("gpt_neox.embed_in.weight".into(), Transform::Same),
        Role::LmHead => ("embed_out.weight".into(), Transform::Linear(d.d_model)),
        // NeoX's head has no bias; this name is never asked for.
        Role::LmHeadBias => ("embed_out.bias".into(), Transform::Reshape),
        Role::Norm { site, bias } => {
            let module = match site {
                NormSite::Attention(i) => format!("{}.input_layernorm", layer(i)),
                NormSite::Final => "gpt_neox.final_layer_norm".into(),
                // NeoX has no other norms; these names are never asked for.
                NormSite::Mlp(i) | NormSite::AfterAttention(i) | NormSite::AfterMlp(i) => {
                    format!("{}.post_attention_layernorm", layer(i))
                }
                NormSite::Query(i) => format!("{}.self_attn.q_norm", layer(i)),
                NormSite::Key(i) => format!("{}.self_attn.k_norm", layer(i)),
            };
            (format!("{module}.{}", suffix(bias)), Transform::Same)
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
            let (module, fan_in) = match which {
                Projection::Query => return fused(0),
                Projection::Key => return fused(1),
                Projection::Value => return fused(2),
                Projection::Output => ("attention.dense", d.num_heads * d.head_dim),
                Projection::Up => ("mlp.dense_h_to_4h", d.d_model),
                Projection::Down => ("mlp.dense_4h_to_h", d.mlp_hidden),
                Projection::Gate => ("mlp.gate_proj", d.d_model),
            };
            projection(&l, module, fan_in, bias)
        }
        // GPT-NeoX has no experts or sinks.
        _ => super::llama::name_of(a, role),
    }
}
