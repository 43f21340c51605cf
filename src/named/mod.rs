//! Tensors with named axes, after Penzai's `pz.nx`.
//!
//! A [`NamedTensor`] wraps a `tch::Tensor` whose axes are either *named* (identified by a name,
//! order irrelevant to the semantics) or *positional* (identified by position, like an ordinary
//! tensor). The underlying layout is `[named axes in storage order..., positional axes...]`;
//! every operation treats the named axes as independent batch dimensions unless it reduces or
//! contracts them by name.
//!
//! - [`NamedTensor::wrap`] / [`tag`](NamedTensor::tag) / [`untag`](NamedTensor::untag) /
//!   [`unwrap`](NamedTensor::unwrap) move axes between the two kinds.
//! - [`NamedTensor::nmap`] lifts a positional operation over all named axes (Penzai's `nmap`):
//!   the operation sees a tensor of shape `[batch, *positional]`, where `batch` is all the named
//!   axes flattened into one dimension, and must treat dimension 0 as a batch dimension.
//! - Arithmetic broadcasts by name ([`ops`]); reductions, softmax, contraction, indexing and
//!   stacking are by name.

pub mod ops;
mod value;

pub use value::{SideInputs, SideValue, Value};

use crate::base::error::{axis_err, Result, TorchContext};
use std::fmt;
use tch::{Device, Kind, Tensor};

/// A tensor whose axes are named or positional. See the module docs.
pub struct NamedTensor {
    tensor: Tensor,
    names: Vec<String>,
}

impl Clone for NamedTensor {
    /// A shallow clone: the new value shares storage with `self` (tensors are immutable values
    /// in pzt's API; in-place updates only happen in optimizers).
    fn clone(&self) -> Self {
        NamedTensor {
            tensor: self.tensor.shallow_clone(),
            names: self.names.clone(),
        }
    }
}

impl fmt::Debug for NamedTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NamedTensor({})", self.describe())
    }
}

fn check_unique(names: &[String], context: &str) -> Result<()> {
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return axis_err(format!(
                "{context}: axis name `{n}` appears twice in {names:?}"
            ));
        }
    }
    Ok(())
}

impl NamedTensor {
    /// Wraps a tensor. With no names all axes are positional; otherwise `names` must name every
    /// axis (Penzai's `wrap(array, *names)`).
    pub fn wrap(tensor: Tensor, names: &[&str]) -> Result<Self> {
        let nt = NamedTensor {
            tensor,
            names: vec![],
        };
        if names.is_empty() {
            Ok(nt)
        } else {
            nt.tag(names)
        }
    }

    /// Builds directly from a tensor whose leading axes are the given named axes and whose
    /// trailing axes are positional.
    pub fn from_parts(tensor: Tensor, names: Vec<String>) -> Result<Self> {
        check_unique(&names, "from_parts")?;
        if names.len() > tensor.dim() {
            return axis_err(format!(
                "from_parts: {} names {:?} for a tensor of shape {:?}",
                names.len(),
                names,
                tensor.size()
            ));
        }
        Ok(NamedTensor { tensor, names })
    }

    /// A scalar (no axes) of the given value.
    pub fn scalar(value: f64, kind: Kind, device: Device) -> Result<Self> {
        let tensor = Tensor::f_full([], value, (kind, device)).ctx("scalar")?;
        Ok(NamedTensor {
            tensor,
            names: vec![],
        })
    }

    /// The underlying tensor in storage layout `[named..., positional...]`.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// The named axes in storage order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether the named axis exists.
    pub fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// The number of positional axes.
    pub fn positional_ndim(&self) -> usize {
        self.tensor.dim() - self.names.len()
    }

    /// The sizes of the positional axes.
    pub fn positional_shape(&self) -> Vec<i64> {
        self.tensor.size()[self.names.len()..].to_vec()
    }

    /// Named axes and their sizes, in storage order.
    pub fn named_shape(&self) -> Vec<(String, i64)> {
        let size = self.tensor.size();
        self.names.iter().cloned().zip(size).collect()
    }

    /// The size of a named axis.
    pub fn size_of(&self, name: &str) -> Result<i64> {
        match self.index_of(name) {
            Some(i) => Ok(self.tensor.size()[i]),
            None => axis_err(format!("no axis `{name}` in {}", self.describe())),
        }
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// A short description: `{a: 2, b: 3} + [4] float32` (named shape, positional shape if
    /// any, dtype).
    pub fn describe(&self) -> String {
        let named: Vec<String> = self
            .named_shape()
            .iter()
            .map(|(n, s)| format!("{n}: {s}"))
            .collect();
        let pos = self.positional_shape();
        let pos = if pos.is_empty() {
            String::new()
        } else {
            format!(" + {pos:?}")
        };
        format!(
            "{{{}}}{pos} {}",
            named.join(", "),
            crate::base::dtype::name(self.kind())
        )
    }

    /// The dtype.
    pub fn kind(&self) -> Kind {
        self.tensor.kind()
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.tensor.device()
    }

    /// Names the positional axes; there must be exactly one name per positional axis.
    pub fn tag(&self, names: &[&str]) -> Result<Self> {
        if names.len() != self.positional_ndim() {
            return axis_err(format!(
                "tag: {} names {:?} for {} positional axes ({})",
                names.len(),
                names,
                self.positional_ndim(),
                self.describe()
            ));
        }
        self.tag_prefix(names)
    }

    /// Names the first `names.len()` positional axes.
    pub fn tag_prefix(&self, names: &[&str]) -> Result<Self> {
        if names.len() > self.positional_ndim() {
            return axis_err(format!(
                "tag_prefix: {} names {:?} but only {} positional axes ({})",
                names.len(),
                names,
                self.positional_ndim(),
                self.describe()
            ));
        }
        let mut all = self.names.clone();
        all.extend(names.iter().map(|s| s.to_string()));
        check_unique(&all, "tag")?;
        Ok(NamedTensor {
            tensor: self.tensor.shallow_clone(),
            names: all,
        })
    }

    /// Turns the named axes `names` into positional axes, in that order. Like Penzai, `untag`
    /// requires that there are no positional axes yet; see [`untag_prefix`](Self::untag_prefix).
    pub fn untag(&self, names: &[&str]) -> Result<Self> {
        if self.positional_ndim() != 0 {
            return axis_err(format!(
                "untag: the tensor already has positional axes ({}); use untag_prefix",
                self.describe()
            ));
        }
        self.untag_prefix(names)
    }

    /// Turns the named axes `names` into positional axes placed before the existing positional
    /// axes, in the given order.
    pub fn untag_prefix(&self, names: &[&str]) -> Result<Self> {
        let mut idx = Vec::with_capacity(names.len());
        for n in names {
            match self.index_of(n) {
                Some(i) => {
                    if idx.contains(&i) {
                        return axis_err(format!("untag: axis `{n}` given twice"));
                    }
                    idx.push(i)
                }
                None => return axis_err(format!("untag: no axis `{n}` in {}", self.describe())),
            }
        }
        let keep: Vec<usize> = (0..self.names.len()).filter(|i| !idx.contains(i)).collect();
        let mut perm: Vec<i64> = keep.iter().map(|&i| i as i64).collect();
        perm.extend(idx.iter().map(|&i| i as i64));
        perm.extend((self.names.len()..self.tensor.dim()).map(|i| i as i64));
        let tensor = if perm.iter().enumerate().all(|(i, &p)| p == i as i64) {
            self.tensor.shallow_clone()
        } else {
            self.tensor.f_permute(perm.as_slice()).ctx("untag")?
        };
        let names = keep.iter().map(|&i| self.names[i].clone()).collect();
        Ok(NamedTensor { tensor, names })
    }

    /// Untags `names` (if any) and returns the plain tensor; fails if named axes remain.
    pub fn unwrap(&self, names: &[&str]) -> Result<Tensor> {
        let t = if names.is_empty() {
            self.clone()
        } else {
            self.untag_prefix(names)?
        };
        if !t.names.is_empty() {
            return axis_err(format!(
                "unwrap: named axes {:?} remain; name them in unwrap(...) ({})",
                t.names,
                self.describe()
            ));
        }
        Ok(t.tensor)
    }

    /// Reorders the storage so that the named axes come in `order` (which must be exactly the
    /// set of named axes). The semantics do not change.
    pub fn with_name_order(&self, order: &[String]) -> Result<Self> {
        if order.len() != self.names.len() || order.iter().any(|n| !self.has(n)) {
            return axis_err(format!(
                "order: {order:?} is not a reordering of the axes of {}",
                self.describe()
            ));
        }
        if order == self.names.as_slice() {
            return Ok(self.clone());
        }
        let mut perm: Vec<i64> = Vec::with_capacity(self.tensor.dim());
        for n in order {
            if let Some(i) = self.index_of(n) {
                perm.push(i as i64);
            }
        }
        perm.extend((self.names.len()..self.tensor.dim()).map(|i| i as i64));
        let tensor = self.tensor.f_permute(perm.as_slice()).ctx("order")?;
        Ok(NamedTensor {
            tensor,
            names: order.to_vec(),
        })
    }

    /// Stores the named axes in the same order as `other` (which must have the same names).
    pub fn order_like(&self, other: &NamedTensor) -> Result<Self> {
        self.with_name_order(&other.names)
    }

    /// Stores the named axes sorted by name, so that two tensors with the same named shape
    /// have the same layout.
    pub fn canonicalize(&self) -> Result<Self> {
        let mut order = self.names.clone();
        order.sort();
        self.with_name_order(&order)
    }

    /// Lifts a positional operation over all named axes. `f` receives the positional part with
    /// all named axes flattened into one leading batch dimension, `[batch, *positional]`, and
    /// must return a tensor `[batch, *new_positional]`.
    pub fn nmap(&self, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Self> {
        let named_sizes: Vec<i64> = self.named_shape().iter().map(|(_, s)| *s).collect();
        let batch: i64 = named_sizes.iter().product();
        let mut flat_shape = vec![batch];
        flat_shape.extend(self.positional_shape());
        let flat = if flat_shape == self.tensor.size() {
            self.tensor.shallow_clone()
        } else {
            self.tensor
                .f_reshape(flat_shape.as_slice())
                .ctx("nmap: flatten named axes")?
        };
        let out = f(&flat)?;
        let osize = out.size();
        if osize.first() != Some(&batch) {
            return axis_err(format!(
                "nmap: the operation returned shape {osize:?}; its leading batch dimension must \
                 stay {batch} (input {})",
                self.describe()
            ));
        }
        let mut new_shape = named_sizes;
        new_shape.extend(&osize[1..]);
        let tensor = if new_shape == osize {
            out
        } else {
            out.f_reshape(new_shape.as_slice())
                .ctx("nmap: restore named axes")?
        };
        Ok(NamedTensor {
            tensor,
            names: self.names.clone(),
        })
    }

    /// Applies a shape-preserving elementwise operation to the whole storage.
    pub fn map_elementwise(&self, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Self> {
        let out = match f(&self.tensor) {
            Ok(t) => t,
            // Shape inference: some elementwise kernels have no meta implementation; the shape
            // (and dtype) of an elementwise result is the input's.
            Err(_) if crate::backend::is_meta(&self.tensor) => self.tensor.shallow_clone(),
            Err(e) => return Err(e),
        };
        if out.size() != self.tensor.size() {
            return axis_err(format!(
                "elementwise operation changed the shape {:?} -> {:?}",
                self.tensor.size(),
                out.size()
            ));
        }
        Ok(NamedTensor {
            tensor: out,
            names: self.names.clone(),
        })
    }

    /// Converts the dtype.
    pub fn to_kind(&self, kind: Kind) -> Result<Self> {
        let tensor = self
            .tensor
            .f_to_kind(kind)
            .ctx(format!("cast to {kind:?}"))?;
        Ok(NamedTensor {
            tensor,
            names: self.names.clone(),
        })
    }

    /// Moves to a device.
    pub fn to_device(&self, device: Device) -> Result<Self> {
        let tensor = self
            .tensor
            .f_to_device(device)
            .ctx(format!("move to {device:?}"))?;
        Ok(NamedTensor {
            tensor,
            names: self.names.clone(),
        })
    }

    /// Detaches from the autograd graph.
    pub fn detach(&self) -> Self {
        NamedTensor {
            tensor: self.tensor.detach(),
            names: self.names.clone(),
        }
    }

    /// Renames named axes (`from` -> `to`, pairwise).
    pub fn rename(&self, pairs: &[(&str, &str)]) -> Result<Self> {
        let mut names = self.names.clone();
        for (from, to) in pairs {
            match self.index_of(from) {
                Some(i) => names[i] = to.to_string(),
                None => {
                    return axis_err(format!("rename: no axis `{from}` in {}", self.describe()))
                }
            }
        }
        check_unique(&names, "rename")?;
        Ok(NamedTensor {
            tensor: self.tensor.shallow_clone(),
            names,
        })
    }

    /// The values as a flat `Vec<f64>` in storage order (for tests and display).
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        let flat = self
            .tensor
            .f_to_kind(Kind::Double)
            .and_then(|t| t.f_flatten(0, -1))
            .ctx("to_vec")?;
        Vec::<f64>::try_from(&flat).ctx("to_vec")
    }
}
