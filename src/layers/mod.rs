//! Primitive layers: linear maps, biases, norms, embeddings, RoPE, attention masks,
//! elementwise functions, softmax, soft-capping, dropout, casts, renames, identity.
//!
//! Every layer is a small struct holding its static config (serde, so it round-trips through
//! TOML) and implementing [`crate::tree::Layer`]. Its parameters live in its [`Node`]: build
//! layers with their `build` functions, which take a [`Scope`] for parameter labels.

pub mod embedding;
pub mod linear;
pub mod masks;
pub mod misc;
pub mod norms;
pub mod rope;

use crate::error::{Error, Result};
use crate::tree::registry::{serde_factory, Factory};
use serde::Serialize;
use std::collections::BTreeMap;

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

pub(crate) fn register_builtins(m: &mut BTreeMap<String, Factory>) {
    use crate::combinators as c;
    let mut add = |k: &str, f: Factory| {
        m.insert(k.to_string(), f);
    };
    add("Linear", serde_factory::<linear::Linear>("Linear"));
    add("AddBias", serde_factory::<linear::AddBias>("AddBias"));
    add(
        "Elementwise",
        serde_factory::<misc::Elementwise>("Elementwise"),
    );
    add("Softmax", serde_factory::<misc::Softmax>("Softmax"));
    add(
        "TanhSoftCap",
        serde_factory::<misc::TanhSoftCap>("TanhSoftCap"),
    );
    add(
        "RenameAxes",
        serde_factory::<misc::RenameAxes>("RenameAxes"),
    );
    add(
        "CastToDType",
        serde_factory::<misc::CastToDType>("CastToDType"),
    );
    add(
        "SaveIntermediate",
        serde_factory::<misc::SaveIntermediate>("SaveIntermediate"),
    );
    add(
        "KVCache",
        serde_factory::<crate::models::generate::KVCache>("KVCache"),
    );
    add("Identity", serde_factory::<misc::Identity>("Identity"));
    add("Rescale", serde_factory::<misc::Rescale>("Rescale"));
    add("Dropout", serde_factory::<misc::Dropout>("Dropout"));
    add(
        "ContractTogether",
        serde_factory::<misc::ContractTogether>("ContractTogether"),
    );
    add(
        "Standardize",
        serde_factory::<norms::Standardize>("Standardize"),
    );
    add(
        "RMSStandardize",
        serde_factory::<norms::RMSStandardize>("RMSStandardize"),
    );
    add(
        "EmbeddingLookup",
        serde_factory::<embedding::EmbeddingLookup>("EmbeddingLookup"),
    );
    add(
        "EmbeddingDecode",
        serde_factory::<embedding::EmbeddingDecode>("EmbeddingDecode"),
    );
    add("ApplyRoPE", serde_factory::<rope::ApplyRoPE>("ApplyRoPE"));
    add(
        "ApplyCausalAttentionMask",
        serde_factory::<masks::ApplyCausalAttentionMask>("ApplyCausalAttentionMask"),
    );
    add(
        "ApplyCausalSlidingWindowAttentionMask",
        serde_factory::<masks::ApplyCausalSlidingWindowAttentionMask>(
            "ApplyCausalSlidingWindowAttentionMask",
        ),
    );
    add(
        "ApplyExplicitAttentionMask",
        serde_factory::<masks::ApplyExplicitAttentionMask>("ApplyExplicitAttentionMask"),
    );
    for kind in c::SEQUENCE_KINDS {
        add(kind, c::sequence_factory(kind));
    }
    add("NamedGroup", serde_factory::<c::NamedGroup>("NamedGroup"));
    add("Residual", serde_factory::<c::Residual>("Residual"));
    add(
        "BranchAndAddTogether",
        serde_factory::<c::BranchAndAddTogether>("BranchAndAddTogether"),
    );
    add(
        "BranchAndMultiplyTogether",
        serde_factory::<c::BranchAndMultiplyTogether>("BranchAndMultiplyTogether"),
    );
    add(
        "Attention",
        serde_factory::<c::attention::Attention>("Attention"),
    );
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
