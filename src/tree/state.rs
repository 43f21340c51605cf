//! Unbinding, binding and freezing parameters and state variables, and `stateless_call`.

use super::{Node, SideInputs, Value};
use crate::base::{Error, Result};
use crate::params::{
    FrozenParameter, ParamEntry, Parameter, ParameterSlot, StateEntry, StateVariable,
};
use std::collections::BTreeMap;

impl Node {
    /// Replaces every live parameter by a slot and returns the distinct parameters (Penzai's
    /// `unbind_params`). `bind` with the returned parameters gives back an equivalent tree.
    pub fn unbind_params(&self) -> Result<(Node, Vec<Parameter>)> {
        let params = self.parameters();
        let tree = self.map_entries(
            &mut |p| {
                Ok(match p {
                    ParamEntry::Bound(b) => ParamEntry::Slot(ParameterSlot {
                        label: b.label().to_string(),
                        shape: b.shape(),
                        kind: b.kind(),
                        trainable: b.trainable(),
                        quantized: None,
                    }),
                    other => other.clone(),
                })
            },
            &mut |s| Ok(s.clone()),
        )?;
        Ok((tree, params))
    }

    /// Fills parameter slots with the parameters of the same label. A slot with no matching
    /// parameter is an error naming it; a parameter whose shape differs from its slot's is an
    /// error naming both shapes. Parameters that match no slot are ignored.
    pub fn bind(&self, params: &[Parameter]) -> Result<Node> {
        let by_label: BTreeMap<&str, &Parameter> = params.iter().map(|p| (p.label(), p)).collect();
        self.map_entries(
            &mut |p| match p {
                ParamEntry::Slot(s) => match by_label.get(s.label.as_str()) {
                    Some(param) if param.shape() == s.shape => {
                        Ok(ParamEntry::Bound((*param).clone()))
                    }
                    Some(param) => Err(Error::Param(format!(
                        "bind: parameter `{}` has shape {:?} but its slot expects {:?}",
                        s.label,
                        param.shape(),
                        s.shape
                    ))),
                    None => Err(Error::Param(format!(
                        "bind: no parameter with label `{}` (shape {:?})",
                        s.label, s.shape
                    ))),
                },
                other => Ok(other.clone()),
            },
            &mut |s| Ok(s.clone()),
        )
    }

    /// Puts the quantized weights `q` (by label) in their slots; other entries stay.
    pub fn bind_quantized(
        &self,
        q: &BTreeMap<String, crate::params::QuantizedParameter>,
    ) -> Result<Node> {
        if q.is_empty() {
            return Ok(self.clone());
        }
        self.map_entries(
            &mut |p| match p {
                ParamEntry::Slot(s) => match q.get(s.label.as_str()) {
                    Some(w) if w.shape() == s.shape => Ok(ParamEntry::Quantized(w.clone())),
                    Some(w) => Err(Error::Param(format!(
                        "bind: quantized `{}` has shape {:?} but its slot expects {:?}",
                        s.label,
                        w.shape(),
                        s.shape
                    ))),
                    None => Ok(p.clone()),
                },
                other => Ok(other.clone()),
            },
            &mut |s| Ok(s.clone()),
        )
    }

    /// Replaces every live parameter by an immutable snapshot of its current value (shared
    /// parameters stay shared: one snapshot per label).
    pub fn freeze_params(&self) -> Result<Node> {
        let mut snaps: BTreeMap<String, FrozenParameter> = BTreeMap::new();
        self.map_entries(
            &mut |p| match p {
                ParamEntry::Bound(b) => {
                    if let Some(f) = snaps.get(b.label()) {
                        return Ok(ParamEntry::Frozen(f.clone()));
                    }
                    let f = FrozenParameter::new(b.label(), &b.value())?;
                    snaps.insert(b.label().to_string(), f.clone());
                    Ok(ParamEntry::Frozen(f))
                }
                other => Ok(other.clone()),
            },
            &mut |s| Ok(s.clone()),
        )
    }

    /// The distinct live state variables.
    pub fn state_variables(&self) -> Vec<StateVariable> {
        let mut out: Vec<StateVariable> = vec![];
        self.walk(&mut |_, n| {
            for (_, s) in n.state_entries() {
                if let StateEntry::Var(v) = s {
                    if !out.iter().any(|w| w.same(v)) {
                        out.push(v.clone());
                    }
                }
            }
        });
        out
    }

    /// Replaces every live state variable by a slot and returns them.
    pub fn unbind_state_vars(&self) -> Result<(Node, Vec<StateVariable>)> {
        let vars = self.state_variables();
        let tree = self.map_entries(&mut |p| Ok(p.clone()), &mut |s| {
            Ok(match s {
                StateEntry::Var(v) => StateEntry::Slot {
                    label: v.label().to_string(),
                },
                other => other.clone(),
            })
        })?;
        Ok((tree, vars))
    }

    /// Fills state slots with the variables of the same label.
    pub fn bind_state_vars(&self, vars: &[StateVariable]) -> Result<Node> {
        self.map_entries(&mut |p| Ok(p.clone()), &mut |s| match s {
            StateEntry::Slot { label } => match vars.iter().find(|v| v.label() == label) {
                Some(v) => Ok(StateEntry::Var(v.clone())),
                None => Err(Error::Param(format!("bind: no state variable `{label}`"))),
            },
            other => Ok(other.clone()),
        })
    }

    /// Replaces every live state variable by its current value, read-only.
    pub fn freeze_state_vars(&self) -> Result<Node> {
        self.map_entries(&mut |p| Ok(p.clone()), &mut |s| {
            Ok(match s {
                StateEntry::Var(v) => StateEntry::Frozen {
                    label: v.label().to_string(),
                    value: v.get(),
                },
                other => other.clone(),
            })
        })
    }

    /// Calls the model with state given as values rather than held in variables: binds fresh
    /// variables holding `state` (by label; variables not given keep their current value),
    /// runs the forward pass, and returns the output and the new state values. The tree's own
    /// variables are not modified.
    pub fn stateless_call(
        &self,
        state: &BTreeMap<String, Option<Value>>,
        x: impl Into<Value>,
        side: &SideInputs,
    ) -> Result<(Value, BTreeMap<String, Option<Value>>)> {
        let (unbound, vars) = self.unbind_state_vars()?;
        let mut fresh = Vec::with_capacity(vars.len());
        for v in &vars {
            let init = match state.get(v.label()) {
                Some(given) => given.clone(),
                None => v.get(),
            };
            fresh.push(StateVariable::new(v.label(), init));
        }
        for k in state.keys() {
            if !vars.iter().any(|v| v.label() == k) {
                return Err(Error::Param(format!(
                    "stateless_call: the model has no state variable `{k}` (it has: {})",
                    vars.iter()
                        .map(|v| v.label())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let bound = unbound.bind_state_vars(&fresh)?;
        let out = bound.forward(x, side)?;
        let new_state = fresh
            .iter()
            .map(|v| (v.label().to_string(), v.get()))
            .collect();
        Ok((out, new_state))
    }
}
