//! Quantized frozen bases (QLoRA): the frozen weights of the contracting `Linear`s in a
//! selection kept as NF4 or int8 ([`crate::params::quantized`]), dequantized when the layer
//! runs. Each quantized `Linear` is wrapped in [`Checkpointed`], so that the backward pass
//! dequantizes the weight again instead of keeping it from the forward pass: the whole base is
//! never held dequantized, only the layer running.
//!
//! A `Linear` whose weights train, that has parallel axes (a norm's scale), or whose weights are
//! shared with another layer (a head tied to the embeddings) is left as it is. Under a DoRA
//! adapter, which reads the pretrained weight itself to normalize it, the Linear is quantized
//! but not wrapped: its dequantized weight is kept for the backward pass.

use super::checkpointed::Checkpointed;
use super::lora::linears_within;
use crate::base::Result;
use crate::layers::linear::Linear;
use crate::params::quantized::Quantized;
use crate::params::{ParamEntry, ParameterSlot, QuantizedParameter};
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
fn quantized_linear(
    n: &Node,
    format: &str,
    shared: &dyn Fn(&str) -> bool,
    wrap: bool,
) -> Result<Option<Node>> {
    let done = |n: Node| match wrap {
        true => Checkpointed::build(n),
        false => n,
    };
    let Some(lin) = n.layer_as::<Linear>() else {
        return Ok(None);
    };
    if lin.input_axes.is_empty() || lin.output_axes.is_empty() || !lin.parallel_axes.is_empty() {
        return Ok(None);
    }
    let w = n.param_entry("weights")?;
    if let ParamEntry::Quantized(q) = w {
        // Quantized as it was loaded: only wrapped.
        return Ok((q.format() == format).then(|| done(n.clone())));
    }
    if w.will_train() || shared(w.label()) {
        return Ok(None);
    }
    if let ParamEntry::Slot(s) = w {
        // Shapes only (planning): the slot says the format, for the memory estimate.
        let slot = ParamEntry::Slot(ParameterSlot {
            quantized: Some(if format == "nf4" { "nf4" } else { "int8" }),
            ..s.clone()
        });
        return Ok(Some(done(n.clone().with_param("weights", slot))));
    }
    let inputs: i64 = lin.input_axes.values().product();
    let q = Quantized::new(&w.value()?, inputs, format).map_err(|e| {
        crate::base::Error::Config(format!(
            "`{}`: {e}; leave it unquantized with `quantize_skip`",
            w.label()
        ))
    })?;
    let entry = ParamEntry::Quantized(QuantizedParameter::new(w.label(), q));
    Ok(Some(done(n.clone().with_param("weights", entry))))
}

/// The tree with the frozen weights of the contracting Linears in `selection` quantized as
/// `format` (`nf4` or `int8`), but those whose labels `skip` says.
pub fn quantize(selection: &Selection, format: &str, skip: &dyn Fn(&str) -> bool) -> Result<Node> {
    let counts = label_counts(selection.root());
    let shared = |l: &str| skip(l) || counts.get(l).copied().unwrap_or(0) > 1;
    // A DoRA adapter reads its pretrained Linear's weight itself: that one is not wrapped (its
    // dequantized weight is kept for backward).
    let mut dora: Vec<Vec<String>> = vec![];
    selection.root().walk(&mut |path, n| {
        if n.layer_as::<super::lora::LowRankAdapter>()
            .is_some_and(|a| a.dora)
        {
            let mut p = path.to_vec();
            p.push("pretrained".into());
            dora.push(p);
        }
    });
    let linears = linears_within(selection);
    linears.apply(|path, n| {
        let wrap = !dora.iter().any(|p: &Vec<String>| path.starts_with(p));
        Ok(quantized_linear(n, format, &shared, wrap)?.unwrap_or_else(|| n.clone()))
    })
}
