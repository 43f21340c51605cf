//! `Attention`: a combinator of five swappable sublayers (Penzai's `pz.nn.Attention`):
//!
//! ```text
//! q = input_to_query(x); k = input_to_key(x); v = input_to_value(x)
//! attn = query_key_to_attn((q, k))        # e.g. Sequential[ContractTogether(projection),
//!                                         #   ApplyCausalAttentionMask, Softmax(kv_seq)]
//! out  = attn_value_to_output((attn, v))  # e.g. ContractTogether(kv_seq)
//! ```
//!
//! When `fused` is on (the default) and the two attention sublayers have exactly that standard
//! shape (with a causal mask, a causal sliding-window mask, or no mask), the attention runs
//! through libtorch's fused `scaled_dot_product_attention` kernel (grouped-query attention
//! included, as query-only head axes such as `q_rep`); any other composition (soft-capping, an
//! explicit mask, a custom layer) runs the sublayers one by one. Both give the same numbers
//! (tested). Query scaling belongs to `input_to_query` (a `Rescale`), so the kernel runs with
//! scale 1.

mod builder;
mod fused;

pub use builder::{AttentionMask, SelfAttentionConfig};

use crate::base::Result;
use crate::tree::{ChildLayout, Layer, Node, SideInputs, Value};
use fused::FusedPlan;
use serde::{Deserialize, Serialize};

/// Query heads in groups over key/value heads (grouped-query attention): both counts at least
/// 1 and `num_heads` a multiple of `num_kv_heads`. Returns the query heads per key/value head.
/// Every builder that takes the two numbers checks them here.
pub fn check_heads(num_heads: i64, num_kv_heads: i64) -> std::result::Result<i64, String> {
    if num_heads < 1 || num_kv_heads < 1 || num_heads % num_kv_heads != 0 {
        return Err(format!(
            "num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads}), both at least 1"
        ));
    }
    Ok(num_heads / num_kv_heads)
}

/// The five child slots of an `Attention`.
pub const ATTENTION_SLOTS: [&str; 5] = [
    "input_to_query",
    "input_to_key",
    "input_to_value",
    "query_key_to_attn",
    "attn_value_to_output",
];

static FUSED_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many attention calls in this process ran through the fused kernel (for tests and
/// diagnostics).
pub fn fused_call_count() -> u64 {
    FUSED_CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The attention combinator. Children: `input_to_query`, `input_to_key`, `input_to_value`,
/// `query_key_to_attn`, `attn_value_to_output`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Attention {
    /// Use the fused kernel when the sublayers have the standard shape.
    pub fused: bool,
}

impl Default for Attention {
    fn default() -> Self {
        Attention { fused: true }
    }
}

impl Attention {
    /// Whether `node` (an Attention node) has the standard sublayer shape that the fused
    /// kernel implements (inputs permitting).
    pub fn is_fusable(node: &Node) -> Result<bool> {
        Ok(node
            .layer_as::<Attention>()
            .map(|a| a.fused)
            .unwrap_or(false)
            && FusedPlan::recognize(node)?.is_some())
    }

    /// Assembles an attention node from its five sublayers.
    pub fn build(q: Node, k: Node, v: Node, qk: Node, av: Node) -> Node {
        Node::new(Attention::default())
            .with_child("input_to_query", q)
            .with_child("input_to_key", k)
            .with_child("input_to_value", v)
            .with_child("query_key_to_attn", qk)
            .with_child("attn_value_to_output", av)
    }
}

impl Layer for Attention {
    crate::layer_common!("Attention");
    fn child_layout(&self) -> ChildLayout {
        ChildLayout::Slots {
            names: &ATTENTION_SLOTS,
            wrap: None,
        }
    }
    fn summary(&self) -> String {
        if self.fused {
            String::new()
        } else {
            "unfused".into()
        }
    }
    fn forward(&self, node: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let q = node.call_child("input_to_query", x.clone(), side)?;
        let k = node.call_child("input_to_key", x.clone(), side)?;
        let v = node.call_child("input_to_value", x, side)?;
        if self.fused {
            if let Some(plan) = FusedPlan::recognize(node)? {
                if let Some(out) = plan.run(&q, &k, &v, side)? {
                    FUSED_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    crate::tree::trace_record("Attention", out.tensor().numel() as i64, out.kind());
                    return Ok(out.into());
                }
            }
        }
        let attn = node.call_child("query_key_to_attn", Value::Tuple(vec![q, k]), side)?;
        node.call_child("attn_value_to_output", Value::Tuple(vec![attn, v]), side)
    }
}
