//! State variables (Penzai's `StateVariable`): mutable values a layer keeps between calls (KV
//! caches, saved intermediates, counters), shared like parameters but never trained.

use super::lock;
use crate::base::{Error, Result};
use crate::named::Value;
use std::sync::{Arc, Mutex};

struct StateInner {
    label: String,
    value: Mutex<Option<Value>>,
}

/// A mutable state variable (KV cache, saved intermediates, counters), shared like a
/// parameter but never trained.
#[derive(Clone)]
pub struct StateVariable(Arc<StateInner>);

impl std::fmt::Debug for StateVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateVariable({})", self.label())
    }
}

impl StateVariable {
    /// A new state variable with an optional initial value.
    pub fn new(label: impl Into<String>, value: Option<Value>) -> Self {
        StateVariable(Arc::new(StateInner {
            label: label.into(),
            value: Mutex::new(value),
        }))
    }
    /// The label.
    pub fn label(&self) -> &str {
        &self.0.label
    }
    /// The current value.
    pub fn get(&self) -> Option<Value> {
        lock(&self.0.value).clone()
    }
    /// Sets the value.
    pub fn set(&self, v: Option<Value>) {
        *lock(&self.0.value) = v;
    }
    /// Whether two handles are the same variable.
    pub fn same(&self, other: &StateVariable) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What a layer holds in one of its state fields.
#[derive(Clone, Debug)]
pub enum StateEntry {
    /// A live variable.
    Var(StateVariable),
    /// A frozen value (read-only).
    Frozen { label: String, value: Option<Value> },
    /// An empty slot to be bound.
    Slot { label: String },
}

impl StateEntry {
    /// The label.
    pub fn label(&self) -> &str {
        match self {
            StateEntry::Var(v) => v.label(),
            StateEntry::Frozen { label, .. } | StateEntry::Slot { label } => label,
        }
    }
    /// The current value.
    pub fn get(&self) -> Result<Option<Value>> {
        match self {
            StateEntry::Var(v) => Ok(v.get()),
            StateEntry::Frozen { value, .. } => Ok(value.clone()),
            StateEntry::Slot { label } => {
                Err(Error::Param(format!("state slot `{label}` is not bound")))
            }
        }
    }
    /// Sets the value (an error for frozen values and slots).
    pub fn set(&self, v: Option<Value>) -> Result<()> {
        match self {
            StateEntry::Var(var) => {
                var.set(v);
                Ok(())
            }
            StateEntry::Frozen { label, .. } => Err(Error::Param(format!(
                "state `{label}` is frozen and cannot be updated"
            ))),
            StateEntry::Slot { label } => {
                Err(Error::Param(format!("state slot `{label}` is not bound")))
            }
        }
    }
}
