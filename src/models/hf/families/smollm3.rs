//! SmolLM3 (`model_type = "smollm3"`): Llama's layout and keys, tied embeddings by default, and
//! layers without RoPE (NoPE): `no_rope_layers` lists 1 for a layer with RoPE and 0 for one
//! without, or, when it is absent, every `no_rope_layer_interval`-th layer (default 4) has none.
//! With `use_sliding_window`, the layers `layer_types` names `sliding_attention` (by default
//! the NoPE layers) attend within `sliding_window`.

use super::{llama, Converter};
use crate::base::Result;
use crate::models::hf::config::{sliding_layers, Cfg, Shared};
use crate::models::hf::Family;

pub const SMOLLM3: Converter = Converter {
    family: Family::Smollm3,
    model_type: "smollm3",
    tied_by_default: true,
    convert,
    ignored: &[],
    name_of: llama::name_of,
};

fn convert(c: &Cfg, s: &mut Shared) -> Result<()> {
    llama::convert(c, s)?;
    let n = s.rope.len();
    let interval = c.int("no_rope_layer_interval")?.unwrap_or(4);
    if interval < 1 {
        return Err(c.error(format!(
            "`no_rope_layer_interval` must be at least 1, got {interval}"
        )));
    }
    let listed = c.get("no_rope_layers").and_then(|v| v.as_array());
    for (i, rope) in s.rope.iter_mut().enumerate() {
        *rope = match listed {
            Some(l) => match l.get(i).and_then(|v| v.as_i64()) {
                Some(1) => true,
                Some(0) => false,
                other => {
                    return Err(c.error(format!(
                        "no_rope_layers[{i}] = {other:?} should be 0 or 1 (one entry per layer)"
                    )))
                }
            },
            None => (i as i64 + 1) % interval != 0,
        };
    }
    if listed.is_some_and(|l| l.len() != n) {
        return Err(c.error(format!("`no_rope_layers` should have {n} entries")));
    }
    let on = c.boolean("use_sliding_window")?.unwrap_or(false);
    let window = c.int("sliding_window")?;
    let rope = s.rope.clone();
    let sliding = sliding_layers(c, n, |i| on && window.is_some() && !rope[i])?;
    for (w, slides) in s.window.iter_mut().zip(sliding) {
        if slides && on {
            *w = Some(window.ok_or_else(|| c.error("sliding layers need `sliding_window`"))?);
        }
    }
    Ok(())
}
