//! Values that flow through layers, and the side inputs passed alongside them.

use super::NamedTensor;
use crate::base::seed::RandomStream;
use crate::base::{Error, Result};
use std::collections::BTreeMap;

/// The input or output of a layer: a named tensor or a tuple of values (Attention's
/// `query_key_to_attn` receives `(query, key)`).
#[derive(Clone, Debug)]
pub enum Value {
    Tensor(NamedTensor),
    Tuple(Vec<Value>),
}

impl From<NamedTensor> for Value {
    fn from(t: NamedTensor) -> Self {
        Value::Tensor(t)
    }
}

impl Value {
    /// The tensor, or an error saying what was found instead.
    pub fn into_tensor(self) -> Result<NamedTensor> {
        match self {
            Value::Tensor(t) => Ok(t),
            Value::Tuple(v) => Err(Error::Axis(format!(
                "expected a tensor, got a tuple of {} values",
                v.len()
            ))),
        }
    }

    /// A reference to the tensor.
    pub fn as_tensor(&self) -> Result<&NamedTensor> {
        match self {
            Value::Tensor(t) => Ok(t),
            Value::Tuple(v) => Err(Error::Axis(format!(
                "expected a tensor, got a tuple of {} values",
                v.len()
            ))),
        }
    }

    /// The elements of a tuple of exactly `n` values.
    pub fn into_tuple(self, n: usize) -> Result<Vec<Value>> {
        match self {
            Value::Tuple(v) if v.len() == n => Ok(v),
            Value::Tuple(v) => Err(Error::Axis(format!(
                "expected a tuple of {n} values, got {}",
                v.len()
            ))),
            Value::Tensor(t) => Err(Error::Axis(format!(
                "expected a tuple of {n} values, got a tensor {}",
                t.describe()
            ))),
        }
    }
}

/// One side input.
#[derive(Clone, Debug)]
pub enum SideValue {
    Tensor(NamedTensor),
    Stream(RandomStream),
    Bool(bool),
    Int(i64),
}

/// Named side inputs passed to every layer of a forward pass (Penzai's `**side_inputs`). A
/// layer reads the ones it uses and ignores the rest. Well-known keys: `token_positions`
/// (integer positions, axis `seq`), `kv_token_positions`, `attn_mask` (boolean, true = attend),
/// `random_stream` (enables dropout).
#[derive(Clone, Debug, Default)]
pub struct SideInputs {
    values: BTreeMap<String, SideValue>,
}

impl SideInputs {
    /// No side inputs.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a value (builder style).
    pub fn with(mut self, key: &str, v: SideValue) -> Self {
        self.values.insert(key.to_string(), v);
        self
    }
    /// Adds a tensor (builder style).
    pub fn with_tensor(self, key: &str, t: NamedTensor) -> Self {
        self.with(key, SideValue::Tensor(t))
    }
    /// Sets a value.
    pub fn insert(&mut self, key: &str, v: SideValue) {
        self.values.insert(key.to_string(), v);
    }
    /// Every entry, by key.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &SideValue)> {
        self.values.iter()
    }
    /// A value.
    pub fn get(&self, key: &str) -> Option<&SideValue> {
        self.values.get(key)
    }
    /// A tensor side input, if present (an error if present with another type).
    pub fn tensor(&self, key: &str) -> Result<Option<&NamedTensor>> {
        match self.values.get(key) {
            None => Ok(None),
            Some(SideValue::Tensor(t)) => Ok(Some(t)),
            Some(other) => Err(Error::Config(format!(
                "side input `{key}` should be a tensor, got {other:?}"
            ))),
        }
    }
    /// The random stream side input, if present.
    pub fn stream(&self, key: &str) -> Option<&RandomStream> {
        match self.values.get(key) {
            Some(SideValue::Stream(s)) => Some(s),
            _ => None,
        }
    }
    /// A boolean side input, if present.
    pub fn flag(&self, key: &str) -> Option<bool> {
        match self.values.get(key) {
            Some(SideValue::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    /// A copy whose random streams are fresh streams at the current positions of these (not
    /// sharing their counters): running a layer again with it draws the same keys again.
    pub fn snapshot_streams(&self) -> SideInputs {
        let values = self
            .values
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    SideValue::Stream(s) => {
                        SideValue::Stream(RandomStream::at(s.base_seed(), s.position()))
                    }
                    other => other.clone(),
                };
                (k.clone(), v)
            })
            .collect();
        SideInputs { values }
    }
    /// The keys.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.values.keys()
    }
}
