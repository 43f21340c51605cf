//! GLM-4 (`model_type = "glm4"`, the `-hf` checkpoints): Llama's attention with biases on the
//! query, key and value projections (`attention_bias`, default true) and none on the output;
//! sandwich norms named `input_layernorm`, `post_self_attn_layernorm` (attention) and
//! `post_attention_layernorm`, `post_mlp_layernorm` (MLP); the gate and up projections fused in
//! `mlp.gate_up_proj`; and RoPE on adjacent pairs of dims (GPT-J's layout) over the first
//! `partial_rotary_factor` (default 0.5) of each head.

use super::{llama, Converter};
use crate::base::Result;
use crate::models::decoder::{NormSite, Projection, Role};
use crate::models::hf::config::{Cfg, Shared};
use crate::models::hf::transform::Transform;
use crate::models::hf::{Arch, Family};

pub const GLM4: Converter = Converter {
    family: Family::Glm4,
    model_type: "glm4",
    tied_by_default: false,
    convert,
    ignored: &[],
    name_of,
};

fn convert(c: &Cfg, s: &mut Shared) -> Result<()> {
    llama::convert(c, s)?;
    let d = &mut s.decoder;
    d.qkv_bias = c.boolean("attention_bias")?.unwrap_or(true);
    d.output_bias = false;
    d.sandwich_norms = true;
    d.rope_interleaved = true;
    // transformers' GLM-4 rotates half of each head unless the config says otherwise.
    let partial = c
        .float("partial_rotary_factor")?
        .or(s.partial.take())
        .unwrap_or(0.5);
    if partial != 1.0 {
        d.rotary_dims = Some(((d.head_dim as f64) * partial) as i64);
    }
    Ok(())
}

/// Llama's names, but GLM-4's norms and the fused `gate_up_proj`.
fn name_of(a: &Arch, role: Role) -> (String, Transform) {
    let d = &a.decoder;
    let layer = |i: usize| format!("model.layers.{i}");
    match role {
        Role::Norm { site, bias: false } => {
            let module = match site {
                NormSite::AfterAttention(i) => format!("{}.post_self_attn_layernorm", layer(i)),
                NormSite::Mlp(i) => format!("{}.post_attention_layernorm", layer(i)),
                NormSite::AfterMlp(i) => format!("{}.post_mlp_layernorm", layer(i)),
                _ => return llama::name_of(a, role),
            };
            (format!("{module}.weight"), Transform::Same)
        }
        Role::Projection {
            layer: i,
            which: which @ (Projection::Gate | Projection::Up),
            bias: false,
        } => {
            let start = if which == Projection::Gate {
                0
            } else {
                d.mlp_hidden
            };
            let tr = Transform::Rows {
                start,
                len: d.mlp_hidden,
                total: 2 * d.mlp_hidden,
                fan_in: d.d_model,
            };
            (format!("{}.mlp.gate_up_proj.weight", layer(i)), tr)
        }
        _ => llama::name_of(a, role),
    }
}
