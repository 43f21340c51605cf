//! Embeddings: an [`EmbeddingTable`] (one parameter of axes `[vocab, embedding...]`) used by
//! `EmbeddingLookup` (token ids -> vectors) and `EmbeddingDecode` (vectors -> logits, for tied
//! output embeddings). Both nodes hold the *same* parameter, so tying survives any edit.

use super::{axes_str, Axes};
use crate::base::{Error, Result};
use crate::named::NamedTensor;
use crate::params::init::Initializer;
use crate::params::ParamEntry;
use crate::tree::{Layer, Node, Scope, SideInputs, Value};
use serde::{Deserialize, Serialize};

/// An embedding table parameter and its axes.
#[derive(Debug, Clone)]
pub struct EmbeddingTable {
    pub vocab_axis: String,
    pub vocab_size: i64,
    pub embedding_axes: Axes,
    pub param: ParamEntry,
}

impl EmbeddingTable {
    /// Makes the table parameter `<scope>.embeddings` (normal init, std 1 by default).
    pub fn build(
        scope: &Scope<'_>,
        vocab_axis: &str,
        vocab_size: i64,
        embedding_axes: Axes,
        init: Option<Initializer>,
    ) -> Result<Self> {
        let mut shape = vec![vocab_size];
        shape.extend(embedding_axes.values());
        let init = init.unwrap_or(Initializer::Normal { std: 1.0 });
        let param = scope.param("embeddings", &shape, init, 1)?;
        Ok(EmbeddingTable {
            vocab_axis: vocab_axis.into(),
            vocab_size,
            embedding_axes,
            param,
        })
    }

    /// A lookup node sharing the table.
    pub fn lookup(&self) -> Node {
        Node::new(EmbeddingLookup {
            vocab_axis: self.vocab_axis.clone(),
            vocab_size: self.vocab_size,
            embedding_axes: self.embedding_axes.clone(),
            init: None,
        })
        .with_param("embeddings", self.param.clone())
    }

    /// A decode (logits) node sharing the table.
    pub fn decode(&self) -> Node {
        Node::new(EmbeddingDecode {
            vocab_axis: self.vocab_axis.clone(),
            vocab_size: self.vocab_size,
            embedding_axes: self.embedding_axes.clone(),
            init: None,
        })
        .with_param("embeddings", self.param.clone())
    }
}

fn table(node: &Node, vocab_axis: &str, emb: &Axes) -> Result<NamedTensor> {
    let mut names = vec![vocab_axis];
    names.extend(emb.keys().map(|s| s.as_str()));
    NamedTensor::wrap(node.param("embeddings")?, &names)
}

/// Looks up integer token ids (a named tensor with only named axes) in the table; the output
/// has the ids' axes plus the embedding axes. Parameter: `embeddings`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingLookup {
    pub vocab_axis: String,
    pub vocab_size: i64,
    pub embedding_axes: Axes,
    /// How the table is initialized when this node creates it (default: normal, std 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Initializer>,
}

impl Layer for EmbeddingLookup {
    crate::layer_common!("EmbeddingLookup");
    fn param_specs(&self) -> Vec<crate::tree::ParamSpec> {
        table_spec(self.vocab_size, &self.embedding_axes, self.init)
    }
    fn param_axes(&self, _name: &str) -> Vec<String> {
        table_axes(&self.vocab_axis, &self.embedding_axes)
    }
    fn summary(&self) -> String {
        format!(
            "{}: {} -> {}",
            self.vocab_axis,
            self.vocab_size,
            axes_str(&self.embedding_axes)
        )
    }
    fn forward(&self, node: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        let ids = x.into_tensor()?;
        if !matches!(
            ids.kind(),
            tch::Kind::Int64
                | tch::Kind::Int
                | tch::Kind::Int16
                | tch::Kind::Int8
                | tch::Kind::Uint8
        ) {
            return Err(Error::Axis(format!(
                "EmbeddingLookup expects integer token ids, got {}",
                ids.describe()
            )));
        }
        let ids = ids.to_kind(tch::Kind::Int64)?;
        let t = table(node, &self.vocab_axis, &self.embedding_axes)?;
        Ok(t.take(&self.vocab_axis, &ids)?.into())
    }
}

/// Contracts the embedding axes with the table, giving logits over the vocab axis.
/// Parameter: `embeddings` (usually shared with an `EmbeddingLookup`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingDecode {
    pub vocab_axis: String,
    pub vocab_size: i64,
    pub embedding_axes: Axes,
    /// How the table is initialized when this node creates it (default: normal, std 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Initializer>,
}

impl Layer for EmbeddingDecode {
    crate::layer_common!("EmbeddingDecode");
    fn param_specs(&self) -> Vec<crate::tree::ParamSpec> {
        table_spec(self.vocab_size, &self.embedding_axes, self.init)
    }
    fn param_axes(&self, _name: &str) -> Vec<String> {
        table_axes(&self.vocab_axis, &self.embedding_axes)
    }
    fn summary(&self) -> String {
        format!(
            "{} -> {}: {}",
            axes_str(&self.embedding_axes),
            self.vocab_axis,
            self.vocab_size
        )
    }
    fn forward(&self, node: &Node, x: Value, _s: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        super::check_axes(&x, &self.embedding_axes, "EmbeddingDecode", "embedding")?;
        let t = table(node, &self.vocab_axis, &self.embedding_axes)?;
        let t = if t.kind() != x.kind() {
            t.to_kind(x.kind())?
        } else {
            t
        };
        let over: Vec<&str> = self.embedding_axes.keys().map(|s| s.as_str()).collect();
        Ok(x.contract(&t, &over)?.into())
    }
}

/// The axes of an embedding table: the vocabulary, then the embedding axes.
fn table_axes(vocab: &str, embedding: &Axes) -> Vec<String> {
    std::iter::once(vocab.to_string())
        .chain(embedding.keys().cloned())
        .collect()
}

fn table_spec(vocab: i64, emb: &Axes, init: Option<Initializer>) -> Vec<crate::tree::ParamSpec> {
    let mut shape = vec![vocab];
    shape.extend(emb.values());
    vec![crate::tree::ParamSpec {
        name: "embeddings".into(),
        shape,
        init: init.unwrap_or(Initializer::Normal { std: 1.0 }),
        fan_in: 1,
    }]
}
