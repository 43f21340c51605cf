//! StarCoder2 (`model_type = "starcoder2"`): Llama's attention layout with biases on all four
//! projections (`use_bias`), LayerNorms with biases (`norm_epsilon`), a plain GELU MLP
//! (`mlp.c_fc`, `mlp.c_proj`, biased too), tied embeddings unless the config says otherwise,
//! and a sliding window on every layer when `sliding_window` is set.

use super::{llama, projection, Converter};
use crate::base::Result;
use crate::models::decoder::{Projection, Role};
use crate::models::hf::config::{act, no_dropout, Cfg, Shared};
use crate::models::hf::transform::Transform;
use crate::models::hf::{Arch, Family};

pub const STARCODER2: Converter = Converter {
    family: Family::Starcoder2,
    model_type: "starcoder2",
    tied_by_default: true,
    convert,
    ignored: &[],
    name_of,
};

fn convert(c: &Cfg, s: &mut Shared) -> Result<()> {
    let d = &mut s.decoder;
    d.layer_norm = true;
    d.norm_eps = c.float("norm_epsilon")?.unwrap_or(1e-5);
    d.gated_mlp = false;
    let a = c.string("hidden_act").unwrap_or("gelu_pytorch_tanh");
    d.activation = act(c, "hidden_act", a)?;
    let bias = c.boolean("use_bias")?.unwrap_or(true);
    d.qkv_bias = bias;
    d.output_bias = bias;
    d.mlp_bias = bias;
    no_dropout(c, &["residual_dropout", "embedding_dropout"])?;
    if let Some(w) = c.int("sliding_window")? {
        s.window.iter_mut().for_each(|x| *x = Some(w));
    }
    Ok(())
}

/// Llama's names, but the MLP's `c_fc` and `c_proj`.
fn name_of(a: &Arch, role: Role) -> (String, Transform) {
    let layer = |i: usize| format!("model.layers.{i}");
    match role {
        Role::Projection {
            layer: i,
            which: Projection::Up,
            bias,
        } => projection(&layer(i), "mlp.c_fc", a.decoder.d_model, bias),
        Role::Projection {
            layer: i,
            which: Projection::Down,
            bias,
        } => projection(&layer(i), "mlp.c_proj", a.decoder.mlp_hidden, bias),
        other => llama::name_of(a, other),
    }
}
