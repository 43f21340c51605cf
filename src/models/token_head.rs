//! A language model's token head: the top-level children from `lm_head` on (the final
//! projection, and the per-token layers after it: a bias, a logit scale, a soft-cap). Losses
//! run it on chunks of tokens ([`crate::train::head`]) and generation on the last position
//! only, so that the `[batch, seq, vocab]` logits are not computed whole.

use crate::base::Result;
use crate::layers::grouping::Sequential;
use crate::named::NamedTensor;
use crate::tree::{Node, SideInputs, Value};

/// The children that may follow `lm_head` in a token head (each acts on each token alone).
const AFTER_HEAD: [&str; 3] = ["lm_head_bias", "logit_scale", "final_softcap"];

/// A model split before its token head.
pub struct HeadSplit {
    /// How many top-level children run before the head (the trunk).
    pub trunk: usize,
    /// The head: the top-level children from `lm_head` on, as one `Sequential`.
    pub head: Node,
}

/// The token head of `tree`, when it has one: `tree` is a `Sequential` with a child `lm_head`
/// that only per-token layers follow.
pub fn split(tree: &Node) -> Option<HeadSplit> {
    tree.layer_as::<Sequential>()?;
    if tree.kind() != "Sequential" {
        return None;
    }
    let children = tree.children();
    let at = children.iter().position(|(n, _)| n == "lm_head")?;
    let per_token = children[at + 1..]
        .iter()
        .all(|(n, _)| AFTER_HEAD.contains(&n.as_str()));
    if at == 0 || !per_token {
        return None;
    }
    Some(HeadSplit {
        trunk: at,
        head: Sequential::named(children[at..].to_vec()),
    })
}

/// Runs the trunk of `tree` (its top-level children before the head) on `x`: the hidden
/// states the head reads.
pub fn trunk(
    tree: &Node,
    split: &HeadSplit,
    x: NamedTensor,
    side: &SideInputs,
) -> Result<NamedTensor> {
    let mut v = Value::Tensor(x);
    for (name, _) in &tree.children()[..split.trunk] {
        v = tree.call_child(name, v, side)?;
    }
    v.into_tensor()
}

/// The model's output at the last position of `seq` only: the trunk on every position, the
/// head on the last (the whole output, sliced, for a model without a token head).
pub fn last_position(
    tree: &Node,
    x: NamedTensor,
    seq: &str,
    side: &SideInputs,
) -> Result<NamedTensor> {
    let last = |t: NamedTensor| -> Result<NamedTensor> {
        let n = t.size_of(seq)?;
        t.slice(seq, n - 1, n)
    };
    match split(tree) {
        Some(s) => {
            let h = last(trunk(tree, &s, x, side)?)?;
            s.head.forward(h, side)?.into_tensor()
        }
        None => last(tree.forward(x, side)?.into_tensor()?),
    }
}
