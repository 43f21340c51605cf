//! Parameters, parameter slots, state variables and random streams (Penzai's `pz.Parameter`,
//! `ParameterSlot`, `StateVariable`, `RandomStream`).
//!
//! A [`Parameter`] is a shared, mutable handle: placing the same `Parameter` at two places in a
//! tree shares it (tied weights); cloning a tree shares all of its parameters. Its *label* is
//! its identity for checkpoints, `bind`, and deterministic initialization.
//!
//! Building a model with no seed gives [`ParameterSlot`]s (shapes only, nothing allocated),
//! like Penzai's `init_base_rng=None`; [`crate::tree::Node::bind`] fills them.

pub mod fingerprint;
pub mod init;
pub mod quantized;
mod state;

pub use crate::base::seed::RandomStream;
pub use state::{StateEntry, StateVariable};

use crate::base::{Error, Result, TorchContext};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tch::{Kind, Tensor};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

struct ParamInner {
    label: String,
    value: Mutex<Tensor>,
    trainable: AtomicBool,
}

/// A shared, mutable, labelled parameter.
#[derive(Clone)]
pub struct Parameter(Arc<ParamInner>);

impl std::fmt::Debug for Parameter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Parameter({}, {:?}, {:?})",
            self.label(),
            self.shape(),
            self.kind()
        )
    }
}

impl Parameter {
    /// A new trainable parameter. Trainable parameters have `requires_grad` set.
    pub fn new(label: impl Into<String>, value: Tensor) -> Self {
        Self::with_trainable(label, value, true)
    }

    /// A new parameter with the given trainability.
    pub fn with_trainable(label: impl Into<String>, value: Tensor, trainable: bool) -> Self {
        let value = value.detach().set_requires_grad(trainable);
        Parameter(Arc::new(ParamInner {
            label: label.into(),
            value: Mutex::new(value),
            trainable: AtomicBool::new(trainable),
        }))
    }

    /// The label (checkpoint key).
    pub fn label(&self) -> &str {
        &self.0.label
    }

    /// The current value (a handle that shares storage and autograd identity with the
    /// parameter, so gradients of a forward pass land on it).
    pub fn value(&self) -> Tensor {
        lock(&self.0.value).shallow_clone()
    }

    /// Replaces the value (keeping trainability). Shapes may change only through this call.
    pub fn set_value(&self, value: Tensor) {
        let t = value.detach().set_requires_grad(self.trainable());
        *lock(&self.0.value) = t;
    }

    /// Copies `value` into the existing storage in place (shape and dtype must match).
    pub fn copy_from(&self, value: &Tensor) -> Result<()> {
        let guard = lock(&self.0.value);
        if guard.size() != value.size() {
            return Err(Error::Param(format!(
                "parameter `{}`: cannot copy a value of shape {:?} into shape {:?}",
                self.label(),
                value.size(),
                guard.size()
            )));
        }
        let _ng = tch::no_grad_guard();
        let mut t = guard.shallow_clone();
        t.f_copy_(value)
            .ctx(format!("copy into parameter `{}`", self.label()))
    }

    /// Whether the optimizer updates it.
    pub fn trainable(&self) -> bool {
        self.0.trainable.load(Ordering::Relaxed)
    }

    /// Changes trainability (and `requires_grad`).
    pub fn set_trainable(&self, on: bool) {
        self.0.trainable.store(on, Ordering::Relaxed);
        let mut g = lock(&self.0.value);
        let t = g.detach().set_requires_grad(on);
        *g = t;
    }

    /// The shape.
    pub fn shape(&self) -> Vec<i64> {
        lock(&self.0.value).size()
    }

    /// The dtype.
    pub fn kind(&self) -> Kind {
        lock(&self.0.value).kind()
    }

    /// Number of elements.
    pub fn numel(&self) -> i64 {
        self.shape().iter().product()
    }

    /// The accumulated gradient, if any.
    pub fn grad(&self) -> Option<Tensor> {
        let g = lock(&self.0.value).grad();
        if g.defined() {
            Some(g)
        } else {
            None
        }
    }

    /// A handle to the same storage that the optimizer does not update (`requires_grad` off):
    /// what freezing a live parameter gives.
    pub fn frozen_view(&self) -> Parameter {
        Parameter::with_trainable(self.label(), self.value(), false)
    }

    /// Whether two handles are the same parameter.
    pub fn same(&self, other: &Parameter) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// An empty place for a parameter: its label, shape and dtype, without a value.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterSlot {
    pub label: String,
    pub shape: Vec<i64>,
    pub kind: Kind,
    /// Whether the parameter bound here will be trained (false once frozen by a strategy).
    pub trainable: bool,
    /// The format it will be kept quantized in (`nf4`, `int8`), when a strategy says so.
    pub quantized: Option<&'static str>,
}

/// An immutable snapshot of a parameter's value (Penzai's `ConstantParameter` after `freeze`).
#[derive(Clone)]
pub struct FrozenParameter {
    label: String,
    value: Arc<Mutex<Tensor>>,
}

impl FrozenParameter {
    /// Snapshots a value (a copy, detached from autograd).
    pub fn new(label: impl Into<String>, value: &Tensor) -> Result<Self> {
        let label = label.into();
        let mut copy = value.f_zeros_like().ctx(format!("freeze `{label}`"))?;
        copy.f_copy_(&value.detach())
            .ctx(format!("freeze `{label}`"))?;
        Ok(FrozenParameter {
            label,
            value: Arc::new(Mutex::new(copy)),
        })
    }
    /// The label.
    pub fn label(&self) -> &str {
        &self.label
    }
    /// The value.
    pub fn value(&self) -> Tensor {
        lock(&self.value).shallow_clone()
    }
}

/// What a layer holds in one of its parameter fields.
#[derive(Clone)]
pub enum ParamEntry {
    /// A live, shared parameter.
    Bound(Parameter),
    /// A frozen snapshot.
    Frozen(FrozenParameter),
    /// An empty slot to be bound later.
    Slot(ParameterSlot),
    /// A frozen weight kept quantized (QLoRA's base), dequantized on each read.
    Quantized(QuantizedParameter),
}

/// A frozen weight kept quantized ([`quantized::Quantized`]): its value is the dequantized
/// weight, made again at each read.
#[derive(Clone)]
pub struct QuantizedParameter {
    label: String,
    q: Arc<Mutex<quantized::Quantized>>,
}

impl QuantizedParameter {
    pub fn new(label: impl Into<String>, q: quantized::Quantized) -> Self {
        QuantizedParameter {
            label: label.into(),
            q: Arc::new(Mutex::new(q)),
        }
    }
    /// The label.
    pub fn label(&self) -> &str {
        &self.label
    }
    /// The dequantized weight.
    pub fn value(&self) -> Result<Tensor> {
        lock(&self.q).dequantize()
    }
    /// Its shape, dtype, bytes and format.
    pub fn shape(&self) -> Vec<i64> {
        lock(&self.q).shape.clone()
    }
    pub fn kind(&self) -> Kind {
        lock(&self.q).kind()
    }
    pub fn bytes(&self) -> i64 {
        lock(&self.q).bytes()
    }
    pub fn format(&self) -> &'static str {
        lock(&self.q).name()
    }
}

impl std::fmt::Debug for ParamEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamEntry::Bound(p) => write!(f, "{p:?}"),
            ParamEntry::Frozen(p) => write!(f, "Frozen({})", p.label()),
            ParamEntry::Slot(s) => write!(f, "Slot({}, {:?})", s.label, s.shape),
            ParamEntry::Quantized(q) => write!(f, "Quantized({}, {})", q.label(), q.format()),
        }
    }
}

impl ParamEntry {
    /// The label.
    pub fn label(&self) -> &str {
        match self {
            ParamEntry::Bound(p) => p.label(),
            ParamEntry::Frozen(p) => p.label(),
            ParamEntry::Slot(s) => &s.label,
            ParamEntry::Quantized(q) => q.label(),
        }
    }

    /// The value, or an error for an unbound slot.
    pub fn value(&self) -> Result<Tensor> {
        match self {
            ParamEntry::Bound(p) => Ok(p.value()),
            ParamEntry::Frozen(p) => Ok(p.value()),
            ParamEntry::Quantized(q) => q.value(),
            ParamEntry::Slot(s) => Err(Error::Param(format!(
                "parameter slot `{}` (shape {:?}) is not bound; build with a seed or bind \
                 parameters first",
                s.label, s.shape
            ))),
        }
    }

    /// The shape (known for slots too).
    pub fn shape(&self) -> Vec<i64> {
        match self {
            ParamEntry::Bound(p) => p.shape(),
            ParamEntry::Frozen(p) => p.value().size(),
            ParamEntry::Slot(s) => s.shape.clone(),
            ParamEntry::Quantized(q) => q.shape(),
        }
    }

    /// The dtype (known for slots too).
    pub fn kind(&self) -> Kind {
        match self {
            ParamEntry::Bound(p) => p.kind(),
            ParamEntry::Frozen(p) => p.value().kind(),
            ParamEntry::Slot(s) => s.kind,
            ParamEntry::Quantized(q) => q.kind(),
        }
    }

    /// Whether it is a live trainable parameter.
    pub fn trainable(&self) -> bool {
        matches!(self, ParamEntry::Bound(p) if p.trainable())
    }

    /// Whether it is or will be trained: a live trainable parameter, or a slot not frozen.
    pub fn will_train(&self) -> bool {
        match self {
            ParamEntry::Bound(p) => p.trainable(),
            ParamEntry::Slot(s) => s.trainable,
            ParamEntry::Frozen(_) | ParamEntry::Quantized(_) => false,
        }
    }
}
