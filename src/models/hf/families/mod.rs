//! One converter per Hugging Face model family: the `model_type`s it reads, the config keys it
//! handles beyond the ones every family shares ([`super::config`]), the keys it knows do not
//! change the computation, and the names its checkpoints give each parameter. Adding a family
//! is adding a file here and a line to [`ALL`].

mod cohere;
mod gemma;
mod glm4;
mod gpt_neox;
mod gpt_oss;
mod granite;
mod llama;
mod mistral;
mod mixtral;
mod olmo2;
mod phi;
mod phi3;
mod qwen;
mod smollm3;
mod starcoder2;

use super::config::{Cfg, Shared};
use super::transform::Transform;
use super::{Arch, Family};
use crate::base::Result;
use crate::models::decoder::Role;

/// A family's converter.
pub struct Converter {
    pub family: Family,
    /// The `model_type` of its configs.
    pub model_type: &'static str,
    /// Whether the input embedding doubles as the output head when `tie_word_embeddings` is
    /// absent.
    pub tied_by_default: bool,
    /// Reads the family's own keys into the shared decoder config.
    pub convert: fn(&Cfg, &mut Shared) -> Result<()>,
    /// Keys the family's configs carry that do not change the computation.
    pub ignored: &'static [&'static str],
    /// The checkpoint tensor that holds a parameter of this role, and its layout.
    pub name_of: fn(&Arch, Role) -> (String, Transform),
}

/// Every family pzt reads.
pub const ALL: [&Converter; 19] = [
    &llama::LLAMA,
    &mistral::MISTRAL,
    &gemma::GEMMA,
    &gemma::GEMMA2,
    &gemma::GEMMA3,
    &gpt_neox::GPT_NEOX,
    &qwen::QWEN2,
    &qwen::QWEN3,
    &starcoder2::STARCODER2,
    &granite::GRANITE,
    &smollm3::SMOLLM3,
    &olmo2::OLMO2,
    &phi3::PHI3,
    &glm4::GLM4,
    &qwen::QWEN3_MOE,
    &mixtral::MIXTRAL,
    &gpt_oss::GPT_OSS,
    &phi::PHI,
    &cohere::COHERE,
];

/// The converter of a `model_type`.
pub fn by_model_type(t: &str) -> Option<&'static Converter> {
    ALL.iter().copied().find(|c| c.model_type == t)
}

/// The converter of a family.
pub fn of(f: Family) -> &'static Converter {
    ALL.iter()
        .copied()
        .find(|c| c.family == f)
        .unwrap_or(&llama::LLAMA)
}

/// A projection's tensor `<layer>.<module>.weight|bias`: a weight laid out as a Linear of
/// `fan_in` inputs, a bias reshaped.
fn projection(layer: &str, module: &str, fan_in: i64, bias: bool) -> (String, Transform) {
    let tr = if bias {
        Transform::Reshape
    } else {
        Transform::Linear(fan_in)
    };
    (format!("{layer}.{module}.{}", suffix(bias)), tr)
}

/// `weight` or `bias`.
fn suffix(bias: bool) -> &'static str {
    if bias {
        "bias"
    } else {
        "weight"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_has_one_converter_and_each_model_type_one_family() {
        for f in [
            Family::Llama,
            Family::Mistral,
            Family::Gemma,
            Family::Gemma2,
            Family::Gemma3,
            Family::GptNeox,
            Family::Qwen2,
            Family::Qwen3,
            Family::Starcoder2,
            Family::Granite,
            Family::Smollm3,
            Family::Olmo2,
            Family::Phi3,
            Family::Glm4,
            Family::Qwen3Moe,
            Family::Mixtral,
            Family::GptOss,
            Family::Phi,
            Family::Cohere,
        ] {
            assert_eq!(ALL.iter().filter(|c| c.family == f).count(), 1, "{f:?}");
            assert_eq!(of(f).family, f);
        }
        for c in ALL {
            assert_eq!(
                by_model_type(c.model_type).map(|x| x.family),
                Some(c.family)
            );
        }
        assert!(by_model_type("qwen2_moe").is_none());
    }
}
