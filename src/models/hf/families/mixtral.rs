//! Mixtral (`model_type = "mixtral"`): Mistral's attention (a sliding window on every layer
//! when `sliding_window` is set) and a sparse mixture of SwiGLU experts in every layer:
//! `num_local_experts` experts of `intermediate_size`, `num_experts_per_tok` per token, their
//! probabilities renormalized. Its checkpoints store the router as
//! `L.block_sparse_moe.gate` and the experts one by one, `L.block_sparse_moe.experts.<e>.w1`
//! (gate), `w3` (up) and `w2` (down), as transformers writes them.

use super::{llama, qwen, Converter};
use crate::base::Result;
use crate::models::decoder::Role;
use crate::models::hf::config::{Cfg, Shared};
use crate::models::hf::transform::Transform;
use crate::models::hf::{Arch, Family};
use serde_json::Value;

pub const MIXTRAL: Converter = Converter {
    family: Family::Mixtral,
    model_type: "mixtral",
    tied_by_default: false,
    convert,
    ignored: &["head_dim", "output_router_logits"],
    name_of,
};

fn convert(c: &Cfg, s: &mut Shared) -> Result<()> {
    llama::convert(c, s)?;
    if let Some(w) = c.int("sliding_window")? {
        s.window.iter_mut().for_each(|x| *x = Some(w));
    }
    c.only(
        "router_jitter_noise",
        &[Value::from(0.0), Value::from(0)],
        "router jitter (noise on the router input in training) is not implemented",
    )?;
    let experts = c.req_int("num_local_experts")?;
    let layers = vec![true; s.window.len()];
    s.decoder.moe = Some(qwen::moe_config(
        c,
        experts,
        "intermediate_size",
        true,
        layers,
    )?);
    Ok(())
}

fn name_of(a: &Arch, role: Role) -> (String, Transform) {
    match role {
        Role::Router { .. } | Role::Experts { .. } | Role::Expert { .. } => {
            llama::moe_name_of(a, role, "block_sparse_moe", ["w1", "w3", "w2"])
        }
        _ => llama::name_of(a, role),
    }
}
