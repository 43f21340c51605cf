//! Gemma (`gemma`), Gemma 2 (`gemma2`) and Gemma 3 (`gemma3_text`): Llama's checkpoint layout,
//! with an RMSNorm of `x * (1 + w)`, the embedding scaled by `sqrt(d_model)`, tied embeddings
//! and a tanh-approximated GELU. Gemma 2 and 3 add sandwich norms, a query scale of
//! `query_pre_attn_scalar^-0.5`, logit soft-capping and sliding layers (by `layer_types`, by
//! `sliding_window_pattern`, or by the family's default pattern); Gemma 3 adds query/key norms
//! and its own RoPE base on the sliding layers.

use super::{llama, Converter};
use crate::base::Result;
use crate::layers::misc::Activation;
use crate::models::hf::config::{act, sliding_layers, Cfg, Shared};
use crate::models::hf::Family;

const IGNORED: &[&str] = &["sliding_window_pattern"];

pub const GEMMA: Converter = Converter {
    family: Family::Gemma,
    model_type: "gemma",
    tied_by_default: true,
    convert: gemma,
    ignored: IGNORED,
    name_of: llama::name_of,
};

pub const GEMMA2: Converter = Converter {
    family: Family::Gemma2,
    model_type: "gemma2",
    tied_by_default: true,
    convert: gemma2,
    ignored: IGNORED,
    name_of: llama::name_of,
};

pub const GEMMA3: Converter = Converter {
    family: Family::Gemma3,
    model_type: "gemma3_text",
    tied_by_default: true,
    convert: gemma3,
    ignored: IGNORED,
    name_of: llama::name_of,
};

/// What every Gemma has.
fn common(c: &Cfg, s: &mut Shared) -> Result<()> {
    let d = &mut s.decoder;
    d.norm_eps = c.float("rms_norm_eps")?.unwrap_or(1e-6);
    s.norm_plus_one = true;
    let a = c
        .string("hidden_activation")
        .or_else(|| c.string("hidden_act"))
        .unwrap_or("gelu_pytorch_tanh");
    let _ = c.get("hidden_act");
    d.activation = act(c, "hidden_activation", a)?;
    let ab = c.boolean("attention_bias")?.unwrap_or(false);
    d.qkv_bias = ab;
    d.output_bias = ab;
    d.embed_scale = Some((d.d_model as f64).sqrt());
    Ok(())
}

fn gemma(c: &Cfg, s: &mut Shared) -> Result<()> {
    common(c, s)?;
    if s.decoder.activation == Activation::Gelu {
        // transformers maps Gemma 1's legacy `gelu` to the tanh approximation.
        s.decoder.activation = Activation::GeluTanh;
    }
    Ok(())
}

/// Gemma 2 and 3: sandwich norms, the query scale, soft-capping, sliding layers.
fn later(c: &Cfg, s: &mut Shared, every_other: bool) -> Result<()> {
    common(c, s)?;
    let d = &mut s.decoder;
    d.sandwich_norms = true;
    if let Some(q) = c.float("query_pre_attn_scalar")? {
        d.query_scale = Some(q.powf(-0.5));
    }
    d.attn_softcap = c.float("attn_logit_softcapping")?;
    d.final_softcap = c.float("final_logit_softcapping")?;
    let sw = c.int("sliding_window")?;
    let pattern = c.int("sliding_window_pattern")?;
    let sliding = sliding_layers(c, s.window.len(), |i| match pattern {
        Some(p) => (i as i64 + 1) % p != 0,
        None if every_other => i % 2 == 0,
        None => (i as i64 + 1) % 6 != 0,
    })?;
    for (w, sliding) in s.window.iter_mut().zip(sliding) {
        if sliding {
            *w = Some(sw.ok_or_else(|| c.error("sliding layers need `sliding_window`"))?);
        }
    }
    Ok(())
}

fn gemma2(c: &Cfg, s: &mut Shared) -> Result<()> {
    later(c, s, true)
}

fn gemma3(c: &Cfg, s: &mut Shared) -> Result<()> {
    later(c, s, false)?;
    s.decoder.qk_norm = true;
    s.sliding_rope.get_or_insert((10_000.0, None));
    s.sliding_layers_use_local_rope = true;
    Ok(())
}
