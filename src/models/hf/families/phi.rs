//! Phi-1, Phi-1.5 and Phi-2 (`model_type = "phi"`): a parallel block with one LayerNorm (with
//! bias) feeding both branches, `x + attn(ln(x)) + mlp(ln(x))`; biases on the query, key,
//! value and output (`dense`) projections; a plain MLP (`fc1`, `fc2`, biased) with `gelu_new`;
//! RoPE on the first `partial_rotary_factor` (default 0.5, top-level or in `rope_parameters`)
//! of each head; a final LayerNorm; an output head with a bias; and optionally
//! (`qk_layernorm`) a LayerNorm with bias over each head of the queries and keys, shared by the
//! heads, before RoPE. `resid_pdrop` (Phi-2 says 0.1) is dropout at the end of both branches
//! in training.
//!
//! | role | tensor (`L` is `model.layers.i`) |
//! |---|---|
//! | embedding | `model.embed_tokens.weight` |
//! | the block's norm | `L.input_layernorm` |
//! | query/key norm | `L.self_attn.{q,k}_layernorm` |
//! | query, key, value, output | `L.self_attn.{q,k,v}_proj`, `L.self_attn.dense` |
//! | up, down | `L.mlp.fc1`, `L.mlp.fc2` |
//! | final norm | `model.final_layernorm` |
//! | head, its bias | `lm_head.weight`, `lm_head.bias` |

use super::{llama, projection, suffix, Converter};
use crate::base::Result;
use crate::models::decoder::{NormSite, Projection, Role};
use crate::models::hf::config::{act, no_dropout, Cfg, Shared};
use crate::models::hf::transform::Transform;
use crate::models::hf::{Arch, Family};

pub const PHI: Converter = Converter {
    family: Family::Phi,
    model_type: "phi",
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
    d.activation = act(
        c,
        "hidden_act",
        c.string("hidden_act").unwrap_or("gelu_new"),
    )?;
    d.qkv_bias = true;
    d.output_bias = true;
    d.mlp_bias = true;
    d.parallel_residual = true;
    d.shared_norm = true;
    d.lm_head_bias = true;
    d.qk_norm = c.boolean("qk_layernorm")?.unwrap_or(false);
    no_dropout(c, &["embd_pdrop"])?;
    // Phi-2 trains with dropout at the end of each branch (`resid_pdrop`, 0.1): pzt applies it
    // there in training, as transformers does.
    d.dropout = c.float("resid_pdrop")?.unwrap_or(0.0);
    // transformers prefers the rope parameters' factor, then the top-level one, then 0.5.
    let top = c.float("partial_rotary_factor")?;
    let p = s.partial.take().or(top).unwrap_or(0.5);
    if !(p > 0.0 && p <= 1.0) {
        return Err(c.error(format!(
            "`partial_rotary_factor` = {p} is not supported: it must be in (0, 1]"
        )));
    }
    let dims = ((d.head_dim as f64) * p) as i64;
    if dims < 1 {
        return Err(c.error(format!(
            "`partial_rotary_factor` = {p} rotates no dims of a head of {}",
            d.head_dim
        )));
    }
    if dims < d.head_dim {
        d.rotary_dims = Some(dims);
    }
    Ok(())
}

/// Phi's names: Llama's embedding and attention projections, its own norms, `dense`, `fc1`,
/// `fc2`, and the head's bias.
fn name_of(a: &Arch, role: Role) -> (String, Transform) {
    let d = &a.decoder;
    let layer = |i: usize| format!("model.layers.{i}");
    match role {
        Role::Norm { site, bias } => {
            let module = match site {
                NormSite::Final => "model.final_layernorm".into(),
                NormSite::Query(i) => format!("{}.self_attn.q_layernorm", layer(i)),
                NormSite::Key(i) => format!("{}.self_attn.k_layernorm", layer(i)),
                // One norm per block; the other sites are never asked for.
                NormSite::Attention(i)
                | NormSite::Mlp(i)
                | NormSite::AfterAttention(i)
                | NormSite::AfterMlp(i) => format!("{}.input_layernorm", layer(i)),
            };
            (format!("{module}.{}", suffix(bias)), Transform::Same)
        }
        Role::Projection {
            layer: i,
            which,
            bias,
        } => match which {
            Projection::Output => {
                projection(&layer(i), "self_attn.dense", d.num_heads * d.head_dim, bias)
            }
            Projection::Up => projection(&layer(i), "mlp.fc1", d.d_model, bias),
            Projection::Down => projection(&layer(i), "mlp.fc2", d.mlp_hidden, bias),
            _ => llama::name_of(a, role),
        },
        _ => llama::name_of(a, role),
    }
}
