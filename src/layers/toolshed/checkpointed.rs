//! `Checkpointed`: activation (gradient) checkpointing of a subtree.
//!
//! `Checkpointed { body }` computes `body(x)` without keeping anything the body computes for
//! the backward pass: only its input `x` is kept. In backward, the body runs again on `x` with
//! grad enabled and its gradients flow into `x` and into the body's trainable parameters
//! (through a custom autograd function of the shim, [`crate::backend::checkpointed`]). The
//! recomputation sees the same side inputs, with random streams rewound to where the forward
//! started, so dropout draws the same masks; it runs under the forward's autocast state.
//!
//! Without grad (evaluation, generation with a KV cache), or when neither `x` nor any parameter
//! of the body needs a gradient, it is just `body(x)`.

use crate::base::{Error, Result};
use crate::named::NamedTensor;
use crate::tree::{
    trace_record, trace_segment, ChildLayout, Layer, Node, Selection, SideInputs, Value,
    RECOMPUTE_PEAK,
};
use serde::{Deserialize, Serialize};

/// Recomputes its `body` in the backward pass instead of keeping its activations.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Checkpointed {}

impl Checkpointed {
    /// `body`, checkpointed.
    pub fn build(body: Node) -> Node {
        Node::new(Checkpointed {}).with_child("body", body)
    }
}

impl Layer for Checkpointed {
    crate::layer_common!("Checkpointed");
    fn child_layout(&self) -> ChildLayout {
        ChildLayout::Slots {
            names: &["body"],
            wrap: Some("body"),
        }
    }
    fn forward(&self, node: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let body = node.child("body")?.clone();
        if !crate::backend::grad_enabled() {
            // Without grad nothing is kept anyway; a planner's trace sees what training keeps:
            // the segment's input, and its activations only while it is recomputed.
            let (input, kind) = match &x {
                Value::Tensor(t) => (t.tensor().numel() as i64, t.kind()),
                _ => (0, tch::Kind::Float),
            };
            let (out, inner) = trace_segment(|| node.call_child("body", x, side));
            if let Some(bytes) = inner {
                trace_record("Checkpointed", input, kind);
                trace_record(RECOMPUTE_PEAK, bytes / 4, tch::Kind::Float);
            }
            return out;
        }
        let params: Vec<tch::Tensor> = body
            .trainable_parameters()
            .iter()
            .map(|p| p.value())
            .collect();
        let x = x.into_tensor()?;
        if params.is_empty() && !x.tensor().requires_grad() {
            return node.call_child("body", x.into(), side);
        }
        let replay = side.snapshot_streams();
        let y = tch::no_grad(|| body.forward(x.clone(), side))
            .and_then(|v| v.into_tensor())
            .map_err(|e| e.in_child("body"))?;
        let in_names = x.names().to_vec();
        let out_names = y.names().to_vec();
        let expect = out_names.clone();
        let recompute = Box::new(move |t: tch::Tensor| {
            let xin = NamedTensor::from_parts(t, in_names.clone())?;
            let y = body
                .forward(xin, &replay.snapshot_streams())?
                .into_tensor()?;
            if y.names() != expect.as_slice() {
                return Err(Error::Axis(format!(
                    "Checkpointed: the recomputed output has axes {:?}, the forward {:?}",
                    y.names(),
                    expect
                )));
            }
            Ok(y.tensor().shallow_clone())
        });
        let out = crate::backend::checkpointed(x.tensor(), &params, y.tensor(), recompute)?;
        Ok(NamedTensor::from_parts(out, out_names)?.into())
    }
}

/// Wraps every selected subtree in a [`Checkpointed`] (Penzai's gradient checkpointing over a
/// selection).
pub fn checkpoint_activations(selection: &Selection) -> Result<Node> {
    selection.apply(|_, n| Ok(Checkpointed::build(n.clone())))
}

/// The tree with every `Checkpointed` replaced by its body (the same computation, activations
/// kept): what export and inspection want.
pub fn without_checkpointing(root: &Node) -> Result<Node> {
    let mut tree = root.clone();
    loop {
        let found = crate::tree::select(&tree).at_instances_of("Checkpointed");
        if found.count() == 0 {
            return Ok(tree);
        }
        tree = found.apply(|_, n| n.child("body").cloned())?;
    }
}
