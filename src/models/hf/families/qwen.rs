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
