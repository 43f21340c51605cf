//! Quantized frozen bases (QLoRA): the frozen weights of the contracting `Linear`s in a
//! selection kept as NF4 or int8 ([`crate::params::quantized`]), dequantized when the layer
//! runs. Each quantized `Linear` is wrapped in [`Checkpointed`], so that the backward pass
//! dequantizes the weight again instead of keeping it from the forward pass: the whole base is
//! never held dequantized, only the layer running.
//!
//! A `Linear` whose weights train, that has parallel axes (a norm's scale), or whose weights are
//! shared with another layer (a head tied to the embeddings) is left as it is.

use super::checkpointed::Checkpointed;
use super::lora::linears_within;
use crate::base::Result;
use crate::layers::linear::Linear;
use crate::params::quantized::Quantized;
use crate::params::{ParamEntry, QuantizedParameter};
use crate::tree::{Node, Selection};

/// How many places hold each parameter label.
fn label_counts(root: &Node) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::new();
    for (_, _, e) in root.all_param_entries() {
        *m.entry(e.label().to_string()).or_insert(0) += 1;
    }
    m
}

/// The Linear `n` with its weights quantized as `format`, checkpointed; None when it is left
/// as it is.
fn quantized_linear(n: &Node, format: &str, shared: &dyn Fn(&str) -> bool) -> Result<Option<Node>> {
    let Some(lin) = n.layer_as::<Linear>() else {
        return Ok(None);
    };
    if lin.input_axes.is_empty() || lin.output_axes.is_empty() || !lin.parallel_axes.is_empty() {
        return Ok(None);
    }
    let w = n.param_entry("weights")?;
    if w.will_train() || shared(w.label()) || matches!(w, ParamEntry::Quantized(_)) {
        return Ok(None);
    }
    if let ParamEntry::Slot(_) = w {
        // Shapes only (planning): nothing to quantize.
        return Ok(None);
    }
    let inputs: i64 = lin.input_axes.values().product();
    let q = Quantized::new(&w.value()?, inputs, format)?;
    let entry = ParamEntry::Quantized(QuantizedParameter::new(w.label(), q));
    Ok(Some(Checkpointed::build(
        n.clone().with_param("weights", entry),
    )))
}

/// The tree with the frozen weights of the contracting Linears in `selection` quantized as
/// `format` (`nf4` or `int8`), but those whose labels `skip` says.
pub fn quantize(selection: &Selection, format: &str, skip: &dyn Fn(&str) -> bool) -> Result<Node> {
    let counts = label_counts(selection.root());
    let shared = |l: &str| skip(l) || counts.get(l).copied().unwrap_or(0) > 1;
    let linears = linears_within(selection);
    linears.apply(|_, n| Ok(quantized_linear(n, format, &shared)?.unwrap_or_else(|| n.clone())))
}
