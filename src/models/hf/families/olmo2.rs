//! OLMo 2 (`model_type = "olmo2"`): Llama's layout and keys, with norms after each branch and
//! none before (`post_attention_layernorm`, `post_feedforward_layernorm`), and an RMSNorm over
//! the whole query and key projections (all heads at once, `self_attn.{q,k}_norm` of
//! `heads x head_dim` weights) before RoPE.

use super::{llama, Converter};
use crate::base::Result;
use crate::models::decoder::{NormSite, Role};
use crate::models::hf::config::{Cfg, Shared};
use crate::models::hf::transform::Transform;
use crate::models::hf::{Arch, Family};

pub const OLMO2: Converter = Converter {
    family: Family::Olmo2,
    model_type: "olmo2",
    tied_by_default: false,
    convert,
    ignored: &[],
    name_of,
};

fn convert(c: &Cfg, s: &mut Shared) -> Result<()> {
    llama::convert(c, s)?;
    let d = &mut s.decoder;
    d.norm_eps = c.float("rms_norm_eps")?.unwrap_or(1e-5);
    d.pre_norms = false;
    d.sandwich_norms = true;
    d.qk_norm = true;
    d.qk_norm_whole = true;
    Ok(())
}

/// Llama's names; the query and key norms hold one weight per projection output.
fn name_of(a: &Arch, role: Role) -> (String, Transform) {
    let (name, tr) = llama::name_of(a, role);
    match role {
        Role::Norm {
            site: NormSite::Query(_) | NormSite::Key(_),
            ..
        } => (name, Transform::Reshape),
        _ => (name, tr),
    }
}
