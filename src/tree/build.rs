//! Path-scoped parameter builders (like candle's `vb.pp("mlp")`): the dotted scope is the
//! parameter's label and checkpoint key, which builders keep equal to the parameter's tree
//! path. It is also its init name (what its initial value is drawn from), unless the builder
//! names that otherwise with [`Scope::pp_as`].

use crate::base::{Error, Result};
use crate::params::init::Initializer;
use crate::params::{ParamEntry, Parameter, ParameterSlot};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use tch::{Device, Kind};

/// Where and how parameters are created.
#[derive(Debug, Clone)]
pub struct Builder {
    /// Base seed; `None` builds parameter slots (shapes only, nothing allocated).
    pub seed: Option<u64>,
    pub device: Device,
    pub kind: Kind,
    /// Parameters made so far, by label: asking again for a label shares the parameter.
    made: RefCell<BTreeMap<String, ParamEntry>>,
    /// Bytes of parameters allocated so far, and what the CPU can hold (read on first use).
    allocated: Cell<u64>,
    budget: Cell<Option<u64>>,
}

impl Builder {
    /// Builds real parameters from `seed`, float32 on the CPU.
    pub fn new(seed: u64) -> Self {
        Builder {
            seed: Some(seed),
            device: Device::Cpu,
            kind: Kind::Float,
            made: Default::default(),
            allocated: Cell::new(0),
            budget: Cell::new(None),
        }
    }
    /// Builds parameter slots only (Penzai's `init_base_rng=None`).
    pub fn slots() -> Self {
        Builder {
            seed: None,
            device: Device::Cpu,
            kind: Kind::Float,
            made: Default::default(),
            allocated: Cell::new(0),
            budget: Cell::new(None),
        }
    }
    /// Sets the device.
    pub fn on(mut self, device: Device) -> Self {
        self.device = device;
        self
    }
    /// Sets the parameter dtype.
    pub fn dtype(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }
    /// Forgets a label, so that the next request for it makes a new parameter (used when a
    /// patch replaces the only subtree that held it).
    pub fn forget(&self, label: &str) {
        self.made.borrow_mut().remove(label);
    }

    /// Counts `values` more parameter values against what the machine can hold, before they
    /// are allocated: a model that cannot fit is refused with its size, not an abort.
    fn reserve(&self, label: &str, values: i64) -> Result<()> {
        let bytes = (values as u64).saturating_mul(self.kind.elt_size_in_bytes() as u64);
        let total = self.allocated.get().saturating_add(bytes);
        self.allocated.set(total);
        if self.device != Device::Cpu {
            return Ok(());
        }
        let budget = match self.budget.get() {
            Some(b) => b,
            None => {
                let b = crate::base::memory::available_bytes().unwrap_or(u64::MAX);
                self.budget.set(Some(b));
                b
            }
        };
        if total > budget {
            let show = |b: u64| crate::base::text::human_bytes(b.min(i64::MAX as u64) as i64);
            return Err(Error::Config(format!(
                "the model's parameters need more than {} (at `{label}`), and this machine has {} available",
                show(total),
                show(budget)
            )));
        }
        Ok(())
    }

    /// The root scope (empty prefix).
    pub fn root(&self) -> Scope<'_> {
        self.scope("")
    }
    /// A scope with a prefix.
    pub fn scope(&self, prefix: &str) -> Scope<'_> {
        Scope {
            builder: self,
            prefix: prefix.to_string(),
            init_prefix: None,
        }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else if name.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A position in the label namespace.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    builder: &'a Builder,
    prefix: String,
    /// Where init names are, when they differ from labels (see [`Scope::pp_as`]).
    init_prefix: Option<String>,
}

impl<'a> Scope<'a> {
    /// A sub-scope: `prefix.name`.
    pub fn pp(&self, name: impl AsRef<str>) -> Scope<'a> {
        let name = name.as_ref();
        Scope {
            builder: self.builder,
            prefix: self.label(name),
            init_prefix: self.init_prefix.as_ref().map(|p| join(p, name)),
        }
    }
    /// A sub-scope at the dotted path `path` (the labels of its parameters) whose parameters
    /// draw their initial values from the init names under `init_path` instead. Builders use it
    /// to keep labels equal to tree paths while the values stay those of the names pzt used
    /// before (so that a recipe initializes the same on every version).
    pub fn pp_as(&self, path: &str, init_path: &str) -> Scope<'a> {
        Scope {
            builder: self.builder,
            prefix: self.label(path),
            init_prefix: Some(self.init_name(init_path)),
        }
    }
    /// The full label of `name` in this scope.
    pub fn label(&self, name: &str) -> String {
        join(&self.prefix, name)
    }
    /// The init name of `name` in this scope (its label unless set by [`pp_as`](Self::pp_as)).
    pub fn init_name(&self, name: &str) -> String {
        match &self.init_prefix {
            Some(p) => join(p, name),
            None => self.label(name),
        }
    }
    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// The builder.
    pub fn builder(&self) -> &Builder {
        self.builder
    }
    /// Creates the parameter `name` of this scope: a trainable parameter initialized
    /// deterministically from (seed, init name), or a slot when building without a seed. A
    /// label that this builder already made is shared (same parameter), if the shapes agree.
    pub fn param(
        &self,
        name: &str,
        shape: &[i64],
        init: Initializer,
        fan_in: i64,
    ) -> Result<ParamEntry> {
        self.make(
            &self.label(name),
            &self.init_name(name),
            shape,
            init,
            fan_in,
        )
    }

    /// Like [`param`](Self::param) with an explicit full label (which is also its init name).
    pub fn param_labelled(
        &self,
        label: &str,
        shape: &[i64],
        init: Initializer,
        fan_in: i64,
    ) -> Result<ParamEntry> {
        self.make(label, label, shape, init, fan_in)
    }

    fn make(
        &self,
        label: &str,
        init_name: &str,
        shape: &[i64],
        init: Initializer,
        fan_in: i64,
    ) -> Result<ParamEntry> {
        if let Some(existing) = self.builder.made.borrow().get(label) {
            if existing.shape() != shape {
                return Err(Error::Param(format!(
                    "parameter `{label}` is declared twice with different shapes: {:?} and {:?}",
                    existing.shape(),
                    shape
                )));
            }
            return Ok(existing.clone());
        }
        let values = crate::base::memory::tensor_values(shape)
            .map_err(|m| Error::Config(format!("parameter `{label}`: {m}")))?;
        let entry = match self.builder.seed {
            None => ParamEntry::Slot(ParameterSlot {
                label: label.to_string(),
                shape: shape.to_vec(),
                kind: self.builder.kind,
                trainable: true,
                quantized: None,
            }),
            Some(seed) => {
                self.builder.reserve(label, values)?;
                let t = init.make(
                    seed,
                    init_name,
                    shape,
                    fan_in,
                    self.builder.kind,
                    self.builder.device,
                )?;
                ParamEntry::Bound(Parameter::new(label, t))
            }
        };
        self.builder
            .made
            .borrow_mut()
            .insert(label.to_string(), entry.clone());
        Ok(entry)
    }
}
