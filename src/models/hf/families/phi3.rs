//! Phi-3, Phi-3.5 and Phi-4-mini (`model_type = "phi3"`): Llama's computation with fused
//! tensors, the queries, keys and values in one `self_attn.qkv_proj` and the gate and up
//! projections in one `mlp.gate_up_proj` (split into pzt's separate projections on load, fused
//! again on export); LongRoPE (`rope_scaling` of type `longrope`, or its older name `su`, with
//! the top-level `original_max_position_embeddings`); `partial_rotary_factor` (Phi-4-mini
//! rotates the first three quarters of each head); and `sliding_window` on every layer.

use super::{llama, Converter};
use crate::base::Result;
use crate::models::decoder::{Projection, Role};
use crate::models::hf::config::{no_dropout, Cfg, Shared};
use crate::models::hf::transform::Transform;
use crate::models::hf::{Arch, Family};

pub const PHI3: Converter = Converter {
    family: Family::Phi3,
    model_type: "phi3",
    tied_by_default: false,
    convert,
    ignored: &[],
    name_of,
};

fn convert(c: &Cfg, s: &mut Shared) -> Result<()> {
    llama::convert(c, s)?;
    let d = &mut s.decoder;
    d.norm_eps = c.float("rms_norm_eps")?.unwrap_or(1e-5);
    no_dropout(c, &["resid_pdrop", "embd_pdrop"])?;
    let partial = c.float("partial_rotary_factor")?.or(s.partial.take());
    if let Some(p) = partial.filter(|p| *p != 1.0) {
        d.rotary_dims = Some(((d.head_dim as f64) * p) as i64);
    }
    if let Some(w) = c.int("sliding_window")? {
        s.window.iter_mut().for_each(|x| *x = Some(w));
    }
    Ok(())
}

/// Llama's names, but the fused projections: row blocks of `qkv_proj` (queries, keys, values)
/// and of `gate_up_proj` (gate, up).
fn name_of(a: &Arch, role: Role) -> (String, Transform) {
    let d = &a.decoder;
    let (q, kv) = (d.num_heads * d.head_dim, d.num_kv_heads * d.head_dim);
    let block = |layer: usize, module: &str, start: i64, len: i64, total: i64| {
        let tr = Transform::Rows {
            start,
            len,
            total,
            fan_in: d.d_model,
        };
        (format!("model.layers.{layer}.{module}.weight"), tr)
    };
    match role {
        Role::Projection {
            layer,
            which,
            bias: false,
        } => match which {
            Projection::Query => block(layer, "self_attn.qkv_proj", 0, q, q + 2 * kv),
            Projection::Key => block(layer, "self_attn.qkv_proj", q, kv, q + 2 * kv),
            Projection::Value => block(layer, "self_attn.qkv_proj", q + kv, kv, q + 2 * kv),
            Projection::Gate => block(layer, "mlp.gate_up_proj", 0, d.mlp_hidden, 2 * d.mlp_hidden),
            Projection::Up => block(
                layer,
                "mlp.gate_up_proj",
                d.mlp_hidden,
                d.mlp_hidden,
                2 * d.mlp_hidden,
            ),
            _ => llama::name_of(a, role),
        },
        _ => llama::name_of(a, role),
    }
}
