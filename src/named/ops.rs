//! Operations on [`NamedTensor`]s by name: broadcasting arithmetic, reductions, softmax,
//! contraction (named einsum), indexing and slicing, stacking and concatenation.
//!
//! Broadcasting: the result has the union of both operands' named axes (the left operand's
//! order first); an axis missing on one side is broadcast. The same name with two different
//! sizes is an error that names both shapes. Positional axes broadcast positionally, aligned on
//! the right, as in NumPy.

use super::NamedTensor;
use crate::base::error::{axis_err, Result, TorchContext};
use tch::Tensor;

/// An elementwise binary operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
    Pow,
}

impl BinaryOp {
    fn apply(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        match self {
            BinaryOp::Add => a.f_add(b),
            BinaryOp::Sub => a.f_sub(b),
            BinaryOp::Mul => a.f_mul(b),
            BinaryOp::Div => a.f_div(b),
            BinaryOp::Maximum => a.f_maximum(b),
            BinaryOp::Minimum => a.f_minimum(b),
            BinaryOp::Pow => a.f_pow(b),
        }
        .ctx(format!("{self:?}"))
    }
}

impl NamedTensor {
    /// Expands `self` to the storage layout `[order..., 1..., positional...]` with size-1 axes
    /// for the names it lacks and `pos_ndim` positional axes (padded on the left with 1s).
    pub(crate) fn aligned_to(&self, order: &[String], pos_ndim: usize) -> Result<Tensor> {
        let own = self.names();
        // Permute own named axes into the order in which they appear in `order`.
        let mut perm: Vec<i64> = Vec::new();
        for n in order {
            if let Some(i) = self.index_of(n) {
                perm.push(i as i64);
            }
        }
        perm.extend((own.len()..self.tensor().dim()).map(|i| i as i64));
        // The common case, already in order, adds no permute (nor a node to back-propagate).
        let identity = perm.iter().enumerate().all(|(i, &p)| p == i as i64);
        let t = if identity {
            self.tensor().shallow_clone()
        } else {
            self.tensor().f_permute(perm.as_slice()).ctx("align")?
        };
        let tsize = t.size();
        let mut shape = Vec::with_capacity(order.len() + pos_ndim);
        let mut k = 0;
        for n in order {
            if self.has(n) {
                shape.push(tsize[k]);
                k += 1;
            } else {
                shape.push(1);
            }
        }
        let pos = self.positional_shape();
        shape.extend(std::iter::repeat_n(1, pos_ndim - pos.len()));
        shape.extend(pos);
        if shape == tsize {
            return Ok(t);
        }
        t.f_reshape(shape.as_slice()).ctx("align")
    }

    /// The broadcast union of named axes of two tensors, checking that shared names agree.
    pub fn union_names(&self, other: &NamedTensor) -> Result<Vec<String>> {
        let mut order: Vec<String> = self.names().to_vec();
        for (n, s) in other.named_shape() {
            match self.index_of(&n) {
                Some(_) => {
                    let mine = self.size_of(&n)?;
                    if mine != s {
                        return axis_err(format!(
                            "axis `{n}` has size {mine} in {} but size {s} in {}",
                            self.describe(),
                            other.describe()
                        ));
                    }
                }
                None => order.push(n),
            }
        }
        Ok(order)
    }

    /// Applies a binary elementwise operation, broadcasting by name.
    pub fn binary(&self, other: &NamedTensor, op: BinaryOp) -> Result<NamedTensor> {
        let order = self.union_names(other)?;
        let pos = self.positional_ndim().max(other.positional_ndim());
        let a = self.aligned_to(&order, pos)?;
        let b = other.aligned_to(&order, pos)?;
        let out = op.apply(&a, &b).map_err(|e| {
            crate::Error::Axis(format!(
                "{op:?} of {} and {}: {e}",
                self.describe(),
                other.describe()
            ))
        })?;
        NamedTensor::from_parts(out, order)
    }

    /// `self + other`, broadcasting by name.
    pub fn add(&self, other: &NamedTensor) -> Result<NamedTensor> {
        self.binary(other, BinaryOp::Add)
    }
    /// `self - other`, broadcasting by name.
    pub fn sub(&self, other: &NamedTensor) -> Result<NamedTensor> {
        self.binary(other, BinaryOp::Sub)
    }
    /// `self * other`, broadcasting by name.
    pub fn mul(&self, other: &NamedTensor) -> Result<NamedTensor> {
        self.binary(other, BinaryOp::Mul)
    }
    /// `self / other`, broadcasting by name.
    pub fn div(&self, other: &NamedTensor) -> Result<NamedTensor> {
        self.binary(other, BinaryOp::Div)
    }

    /// `self + c`.
    pub fn add_scalar(&self, c: f64) -> Result<NamedTensor> {
        self.map_elementwise(|t| t.f_add_scalar(c).ctx("add_scalar"))
    }
    /// `self * c`.
    pub fn mul_scalar(&self, c: f64) -> Result<NamedTensor> {
        self.map_elementwise(|t| t.f_mul_scalar(c).ctx("mul_scalar"))
    }

    fn dims_of(&self, names: &[&str], what: &str) -> Result<Vec<i64>> {
        let mut dims = Vec::with_capacity(names.len());
        for n in names {
            match self.index_of(n) {
                Some(i) => dims.push(i as i64),
                None => return axis_err(format!("{what}: no axis `{n}` in {}", self.describe())),
            }
        }
        Ok(dims)
    }

    fn without(&self, names: &[&str]) -> Vec<String> {
        self.names()
            .iter()
            .filter(|n| !names.contains(&n.as_str()))
            .cloned()
            .collect()
    }

    /// Sums over the named axes `names`.
    pub fn sum(&self, names: &[&str]) -> Result<NamedTensor> {
        let dims = self.dims_of(names, "sum")?;
        let t = self
            .tensor()
            .f_sum_dim_intlist(dims.as_slice(), false, None)
            .ctx("sum")?;
        NamedTensor::from_parts(t, self.without(names))
    }

    /// Averages over the named axes `names`.
    pub fn mean(&self, names: &[&str]) -> Result<NamedTensor> {
        let dims = self.dims_of(names, "mean")?;
        let t = self
            .tensor()
            .f_mean_dim(dims.as_slice(), false, None)
            .ctx("mean")?;
        NamedTensor::from_parts(t, self.without(names))
    }

    /// Maximum over the named axes `names`.
    pub fn max(&self, names: &[&str]) -> Result<NamedTensor> {
        let dims = self.dims_of(names, "max")?;
        let t = self.tensor().f_amax(dims.as_slice(), false).ctx("max")?;
        NamedTensor::from_parts(t, self.without(names))
    }

    /// Moves the named axes `names` to the end of the storage and flattens them, returning the
    /// tensor `[others..., positional..., prod(names)]`-style helper input for softmax-like ops.
    fn with_axes_last(&self, names: &[&str], what: &str) -> Result<(Tensor, Vec<i64>)> {
        let dims = self.dims_of(names, what)?;
        if self.positional_ndim() != 0 {
            return axis_err(format!(
                "{what} over named axes needs a tensor without positional axes ({})",
                self.describe()
            ));
        }
        let others: Vec<String> = self.without(names);
        let mut order = others.clone();
        order.extend(names.iter().map(|s| s.to_string()));
        let t = self.with_name_order(&order)?;
        let size = t.tensor().size();
        let keep = size[..others.len()].to_vec();
        let mut flat = keep.clone();
        flat.push(
            dims.iter()
                .map(|&d| self.tensor().size()[d as usize])
                .product(),
        );
        let ft = t
            .tensor()
            .f_reshape(flat.as_slice())
            .ctx(what.to_string())?;
        Ok((ft, size))
    }

    /// Softmax jointly over the named axes `names`.
    pub fn softmax(&self, names: &[&str]) -> Result<NamedTensor> {
        let (flat, size) = self.with_axes_last(names, "softmax")?;
        let sm = flat.f_softmax(-1, None::<tch::Kind>).ctx("softmax")?;
        let t = sm.f_reshape(size.as_slice()).ctx("softmax")?;
        let mut order = self.without(names);
        order.extend(names.iter().map(|s| s.to_string()));
        NamedTensor::from_parts(t, order)
    }

    /// Log-softmax jointly over the named axes `names`.
    pub fn log_softmax(&self, names: &[&str]) -> Result<NamedTensor> {
        let (flat, size) = self.with_axes_last(names, "log_softmax")?;
        let sm = flat
            .f_log_softmax(-1, None::<tch::Kind>)
            .ctx("log_softmax")?;
        let t = sm.f_reshape(size.as_slice()).ctx("log_softmax")?;
        let mut order = self.without(names);
        order.extend(names.iter().map(|s| s.to_string()));
        NamedTensor::from_parts(t, order)
    }

    /// Index of the maximum along one named axis (the axis is removed).
    pub fn argmax(&self, name: &str) -> Result<NamedTensor> {
        let d = self.dims_of(&[name], "argmax")?[0];
        let t = self.tensor().f_argmax(d, false).ctx("argmax")?;
        NamedTensor::from_parts(t, self.without(&[name]))
    }

    /// Selects index `i` of the named axis (the axis is removed). Negative indices count from
    /// the end.
    pub fn index(&self, name: &str, i: i64) -> Result<NamedTensor> {
        let d = self.dims_of(&[name], "index")?[0];
        let size = self.size_of(name)?;
        if i >= size || i < -size {
            return axis_err(format!(
                "index {i} is out of range for axis `{name}` of size {size} ({})",
                self.describe()
            ));
        }
        let t = self.tensor().f_select(d, i).ctx("index")?;
        NamedTensor::from_parts(t, self.without(&[name]))
    }

    /// Keeps `start..end` of the named axis.
    pub fn slice(&self, name: &str, start: i64, end: i64) -> Result<NamedTensor> {
        let d = self.dims_of(&[name], "slice")?[0];
        let size = self.size_of(name)?;
        if start < 0 || end > size || start > end {
            return axis_err(format!(
                "slice {start}..{end} is out of range for axis `{name}` of size {size} ({})",
                self.describe()
            ));
        }
        let t = self.tensor().f_narrow(d, start, end - start).ctx("slice")?;
        NamedTensor::from_parts(t, self.names().to_vec())
    }

    /// Gathers along the named axis `name` with integer `indices` (a named tensor without
    /// positional axes): the axis `name` is replaced by the axes of `indices`, which must not
    /// already exist (except as shared batch axes is not supported: they are new axes).
    pub fn take(&self, name: &str, indices: &NamedTensor) -> Result<NamedTensor> {
        let d = self.dims_of(&[name], "take")?[0];
        if indices.positional_ndim() != 0 {
            return axis_err(format!(
                "take: indices must have only named axes ({})",
                indices.describe()
            ));
        }
        for n in indices.names() {
            if n != name && self.has(n) {
                return axis_err(format!(
                    "take: index axis `{n}` already exists in {}",
                    self.describe()
                ));
            }
        }
        let mut names = indices.names().to_vec();
        names.extend(self.without(&[name]));
        if crate::backend::is_meta(self.tensor()) || crate::backend::is_meta(indices.tensor()) {
            // No meta kernel for index_select: the shape is known anyway.
            let mut shape = indices.tensor().size();
            for (i, s) in self.tensor().size().iter().enumerate() {
                if i as i64 != d {
                    shape.push(*s);
                }
            }
            let t = crate::backend::meta_empty(&shape, self.kind())?;
            return NamedTensor::from_parts(t, names);
        }
        let flat = indices.tensor().f_flatten(0, -1).ctx("take")?;
        let picked = self.tensor().f_index_select(d, &flat).ctx("take")?;
        // Move the gathered dim to the front, then unflatten it into the index axes.
        let t = picked.f_movedim(d, 0).ctx("take")?;
        let mut shape = indices.tensor().size();
        shape.extend(&t.size()[1..]);
        let t = t.f_reshape(shape.as_slice()).ctx("take")?;
        NamedTensor::from_parts(t, names)
    }

    /// Contracts two tensors by name (named einsum): the result has the union of the named
    /// axes minus `over`, which are multiplied and summed. Shared axes not in `over` are batch
    /// axes. Neither operand may have positional axes.
    pub fn contract(&self, other: &NamedTensor, over: &[&str]) -> Result<NamedTensor> {
        einsum(&[self, other], over)
    }

    /// Stacks tensors with the same named shape along a new named axis.
    pub fn stack(items: &[NamedTensor], name: &str) -> Result<NamedTensor> {
        let first = match items.first() {
            Some(f) => f,
            None => return axis_err("stack: no tensors"),
        };
        if first.has(name) {
            return axis_err(format!(
                "stack: axis `{name}` already exists in {}",
                first.describe()
            ));
        }
        let mut ts = Vec::with_capacity(items.len());
        for it in items {
            ts.push(it.with_name_order(first.names()).map_err(|_| {
                crate::Error::Axis(format!(
                    "stack: {} and {} have different named axes",
                    first.describe(),
                    it.describe()
                ))
            })?);
        }
        let raw: Vec<&Tensor> = ts.iter().map(|t| t.tensor()).collect();
        let t = Tensor::f_stack(&raw, 0).ctx("stack")?;
        let mut names = vec![name.to_string()];
        names.extend(first.names().iter().cloned());
        NamedTensor::from_parts(t, names)
    }

    /// Concatenates tensors along an existing named axis.
    pub fn concat(items: &[NamedTensor], name: &str) -> Result<NamedTensor> {
        let first = match items.first() {
            Some(f) => f,
            None => return axis_err("concat: no tensors"),
        };
        let d = first.dims_of(&[name], "concat")?[0];
        let mut ts = Vec::with_capacity(items.len());
        for it in items {
            ts.push(it.with_name_order(first.names())?);
        }
        let raw: Vec<&Tensor> = ts.iter().map(|t| t.tensor()).collect();
        let t = Tensor::f_cat(&raw, d).map_err(|e| {
            crate::Error::Axis(format!("concat along `{name}`: shapes do not match: {e}"))
        })?;
        NamedTensor::from_parts(t, first.names().to_vec())
    }

    /// Broadcasts to include the named axes of `sizes` (new axes of the given sizes).
    pub fn broadcast_to(&self, sizes: &[(String, i64)]) -> Result<NamedTensor> {
        let mut order = self.names().to_vec();
        for (n, _) in sizes {
            if !order.contains(n) {
                order.push(n.clone());
            }
        }
        let pos = self.positional_shape();
        let aligned = self.aligned_to(&order, pos.len())?;
        let mut shape = Vec::new();
        for n in &order {
            if let Some((_, s)) = sizes.iter().find(|(m, _)| m == n) {
                shape.push(*s);
            } else {
                shape.push(self.size_of(n)?);
            }
        }
        shape.extend(pos);
        let t = aligned.f_expand(shape.as_slice(), false).ctx("broadcast")?;
        NamedTensor::from_parts(t, order)
    }
}

/// Named einsum over any number of operands: multiplies all operands (broadcasting by name)
/// and sums over `over`. Operands must have only named axes.
pub fn einsum(operands: &[&NamedTensor], over: &[&str]) -> Result<NamedTensor> {
    let mut letters: Vec<(String, i64)> = Vec::new();
    for op in operands {
        if op.positional_ndim() != 0 {
            return axis_err(format!(
                "contract: operands must have only named axes, got {}",
                op.describe()
            ));
        }
        for (n, s) in op.named_shape() {
            match letters.iter().find(|(m, _)| *m == n) {
                Some((_, s0)) if *s0 != s => {
                    return axis_err(format!(
                        "contract: axis `{n}` has sizes {s0} and {s} ({})",
                        operands
                            .iter()
                            .map(|o| o.describe())
                            .collect::<Vec<_>>()
                            .join(" vs ")
                    ))
                }
                Some(_) => {}
                None => letters.push((n, s)),
            }
        }
    }
    for o in over {
        if !letters.iter().any(|(n, _)| n == o) {
            return axis_err(format!("contract: no operand has axis `{o}`"));
        }
    }
    if letters.len() > 52 {
        return axis_err("contract: more than 52 distinct axes");
    }
    let letter = |i: usize| -> char {
        let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        alphabet[i] as char
    };
    let pos = |n: &str| letters.iter().position(|(m, _)| m == n).unwrap_or(0);
    let mut eq = String::new();
    for (k, op) in operands.iter().enumerate() {
        if k > 0 {
            eq.push(',');
        }
        for n in op.names() {
            eq.push(letter(pos(n)));
        }
    }
    eq.push_str("->");
    let mut out_names = Vec::new();
    for (i, (n, _)) in letters.iter().enumerate() {
        if !over.contains(&n.as_str()) {
            eq.push(letter(i));
            out_names.push(n.clone());
        }
    }
    let raw: Vec<&Tensor> = operands.iter().map(|o| o.tensor()).collect();
    let t = Tensor::f_einsum(&eq, &raw, None::<&[i64]>).ctx(format!("contract `{eq}`"))?;
    NamedTensor::from_parts(t, out_names)
}

impl NamedTensor {
    /// Where `mask` (boolean, broadcast by name) is false, replaces values by `value`.
    pub fn fill_where_not(&self, mask: &NamedTensor, value: f64) -> Result<NamedTensor> {
        let order = self.union_names(mask)?;
        let missing: Vec<(String, i64)> = mask
            .named_shape()
            .into_iter()
            .filter(|(n, _)| !self.has(n))
            .collect();
        let base = if missing.is_empty() {
            self.clone()
        } else {
            self.broadcast_to(&missing)?
        };
        let base = base.with_name_order(&order)?;
        if crate::backend::is_meta(base.tensor()) {
            return Ok(base); // shapes only: the values do not matter
        }
        let pos = base.positional_ndim();
        let m = mask.aligned_to(&order, pos)?;
        let keep_not = m.f_logical_not().ctx("mask")?;
        let t = base
            .tensor()
            .f_masked_fill(&keep_not, value)
            .ctx("masked fill")?;
        NamedTensor::from_parts(t, order)
    }
}
