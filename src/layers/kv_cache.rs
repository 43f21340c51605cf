//! `KVCache`: a layer that appends its input to the keys (or values) it holds in a state
//! variable and returns them all, and [`with_kv_cache`], which puts one after every attention's
//! key and value projections for incremental decoding.

use super::grouping::Sequential;
use crate::base::Result;
use crate::named::NamedTensor;
use crate::params::{StateEntry, StateVariable};
use crate::tree::{select, Layer, Node, SideInputs, Value};
use serde::{Deserialize, Serialize};

/// Appends its input to the cache it holds (state `cache`) along `axis` and returns the whole
/// cache.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KVCache {
    pub axis: String,
}

impl Default for KVCache {
    fn default() -> Self {
        KVCache {
            axis: "kv_seq".into(),
        }
    }
}

impl Layer for KVCache {
    crate::layer_common!("KVCache");
    fn state_specs(&self) -> Vec<String> {
        vec!["cache".into()]
    }
    fn summary(&self) -> String {
        format!("along {}", self.axis)
    }
    fn forward(&self, node: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        let st = node.state("cache")?;
        let all = match st.get()? {
            Some(prev) => NamedTensor::concat(&[prev.into_tensor()?, x], &self.axis)?,
            None => x,
        };
        st.set(Some(all.clone().into()))?;
        Ok(all.into())
    }
}

/// A copy of `model` with fresh, empty KV caches after every attention's key and value
/// projections (parameters are shared with `model`).
pub fn with_kv_cache(model: &Node) -> Result<Node> {
    let mut n = 0usize;
    select(model)
        .at_instances_of("Attention")
        .apply(|path, att| {
            let mut out = att.clone();
            for slot in ["input_to_key", "input_to_value"] {
                let child = att.child(slot)?;
                let label = format!("{}.{slot}.cache", path.join("."));
                n += 1;
                let cache = Node::new(KVCache::default())
                    .with_state("cache", StateEntry::Var(StateVariable::new(label, None)));
                let seq = if child.is_sequence() {
                    let mut cs = child.children().to_vec();
                    let name = if cs.iter().all(|(k, _)| k.parse::<usize>().is_ok()) {
                        cs.len().to_string()
                    } else {
                        "cache".to_string()
                    };
                    cs.push((name, cache));
                    child.clone().with_children(cs)
                } else {
                    Sequential::named(vec![
                        ("project".into(), child.clone()),
                        ("cache".into(), cache),
                    ])
                };
                out = out.with_child(slot, seq);
            }
            Ok(out)
        })
}
