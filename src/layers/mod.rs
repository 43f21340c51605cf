//! The layers: primitives (linear maps, biases, norms, embeddings, RoPE, attention masks,
//! elementwise functions, softmax, soft-capping, dropout, casts, renames, identity), the
//! grouping layers (`Sequential`, `Residual`, `Branch*`, `NamedGroup`), `Attention` and its
//! builder, the KV cache, and the toolshed (LoRA/DoRA adapters, freezing, activation
//! checkpointing).
//!
//! Every layer is a small struct holding its static config (serde, so it round-trips through
//! TOML) and implementing [`crate::tree::Layer`]. Its parameters live in its [`Node`]: build
//! layers with their `build` functions, which take a [`Scope`] for parameter labels.
//! [`register_builtins`] names them all in a [`Registry`].

mod args;
pub mod attention;
pub mod embedding;
pub mod grouping;
pub mod input;
pub mod kv_cache;
pub mod linear;
pub mod masks;
pub mod misc;
pub mod moe;
pub mod norms;
pub mod rope;
pub mod toolshed;

use crate::base::{Error, Result};
use crate::tree::registry::serde_factory;
use crate::tree::Registry;
use serde::Serialize;
use std::sync::Arc;

pub use crate::tree::{Node, Scope};

/// Serializes a layer's config struct into a TOML table.
#[doc(hidden)]
pub fn to_table<T: Serialize>(v: &T) -> Result<toml::Table> {
    match toml::Value::try_from(v) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Ok(toml::Table::new()),
        Err(e) => Err(Error::Config(format!("cannot serialize layer config: {e}"))),
    }
}

/// The kind/config/as_any part of a `Layer` impl for a serde config struct.
#[macro_export]
#[doc(hidden)]
macro_rules! layer_common {
    ($kind:expr) => {
        fn kind(&self) -> &str {
            $kind
        }
        fn config(&self) -> $crate::Result<$crate::toml::Table> {
            $crate::layers::to_table(self)
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    };
}

/// Registers every built-in layer kind in `reg`, and the kinds a recipe may declare by their
/// arguments (`Affine`, `LayerNorm`, `RMSLayerNorm`).
pub fn register_builtins(reg: &mut Registry) {
    macro_rules! serde_kinds {
        ($($kind:literal => $ty:ty),* $(,)?) => {
            $(reg.register_layer($kind, serde_factory::<$ty>($kind));)*
        };
    }
    serde_kinds! {
        "Linear" => linear::Linear,
        "AddBias" => linear::AddBias,
        "Elementwise" => misc::Elementwise,
        "Softmax" => misc::Softmax,
        "TanhSoftCap" => misc::TanhSoftCap,
        "RenameAxes" => misc::RenameAxes,
        "CastToDType" => misc::CastToDType,
        "SaveIntermediate" => misc::SaveIntermediate,
        "KVCache" => kv_cache::KVCache,
        "Identity" => misc::Identity,
        "Rescale" => misc::Rescale,
        "Dropout" => misc::Dropout,
        "ContractTogether" => misc::ContractTogether,
        "Standardize" => norms::Standardize,
        "RMSStandardize" => norms::RMSStandardize,
        "EmbeddingLookup" => embedding::EmbeddingLookup,
        "EmbeddingDecode" => embedding::EmbeddingDecode,
        "ApplyRoPE" => rope::ApplyRoPE,
        "ApplyCausalAttentionMask" => masks::ApplyCausalAttentionMask,
        "ApplyCausalSlidingWindowAttentionMask" => masks::ApplyCausalSlidingWindowAttentionMask,
        "ApplyExplicitAttentionMask" => masks::ApplyExplicitAttentionMask,
        "NamedGroup" => grouping::NamedGroup,
        "Residual" => grouping::Residual,
        "BranchAndAddTogether" => grouping::BranchAndAddTogether,
        "BranchAndMultiplyTogether" => grouping::BranchAndMultiplyTogether,
        "Attention" => attention::Attention,
        "LowRankAdapter" => toolshed::LowRankAdapter,
        "Checkpointed" => toolshed::Checkpointed,
        "LinearizeAndAdjust" => toolshed::LinearizeAndAdjust,
        "KnockOutAttentionHeads" => toolshed::KnockOutAttentionHeads,
        "TopKRouting" => moe::TopKRouting,
        "Experts" => moe::Experts,
        "Expert" => moe::Expert,
        "SparseMoE" => moe::SparseMoE,
        "SoftmaxWithSink" => misc::SoftmaxWithSink,
    }
    for kind in grouping::SEQUENCE_KINDS {
        reg.register_layer(kind, grouping::sequence_factory(kind));
    }
    reg.register_by_args(
        "Affine",
        &["input_axes", "output_axes"],
        Arc::new(|cfg: &toml::Table, scope: &Scope<'_>| {
            let i = args::axes(cfg, "input_axes", "Affine")?;
            let o = args::axes(cfg, "output_axes", "Affine")?;
            linear::affine(scope, i, o)
        }),
    );
    for kind in ["LayerNorm", "RMSLayerNorm"] {
        reg.register_by_args(
            kind,
            &["axes", "epsilon"],
            Arc::new(move |cfg: &toml::Table, scope: &Scope<'_>| {
                let axes = args::axes(cfg, "axes", kind)?;
                let eps = args::number(cfg, "epsilon")?.unwrap_or(1e-6);
                if kind == "LayerNorm" {
                    norms::layer_norm(scope, axes, eps)
                } else {
                    norms::rms_layer_norm(scope, axes, eps)
                }
            }),
        );
    }
}

/// An ordered axis-name -> size map, as written in recipes: `{ embedding = 64 }`.
pub type Axes = indexmap::IndexMap<String, i64>;

/// Checks that `x` has each axis of `axes` with the declared size.
pub(crate) fn check_axes(
    x: &crate::named::NamedTensor,
    axes: &Axes,
    layer: &str,
    role: &str,
) -> Result<()> {
    for (name, &size) in axes {
        match x.size_of(name) {
            Ok(s) if s == size => {}
            Ok(s) => {
                return Err(Error::Axis(format!(
                    "{layer}: {role} axis `{name}` should have size {size}, but the input has \
                     size {s} ({})",
                    x.describe()
                )))
            }
            Err(_) => {
                return Err(Error::Axis(format!(
                    "{layer}: the input lacks the {role} axis `{name}` (size {size}); input is {}",
                    x.describe()
                )))
            }
        }
    }
    Ok(())
}

/// Formats axes for summaries: `{embedding: 64}`.
pub(crate) fn axes_str(a: &Axes) -> String {
    let v: Vec<String> = a.iter().map(|(k, s)| format!("{k}: {s}")).collect();
    format!("{{{}}}", v.join(", "))
}
