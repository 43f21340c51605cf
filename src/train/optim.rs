//! AdamW and SGD written over tensors, so that their state is ordinary tensors keyed by
//! parameter label (checkpointable, restored exactly on resume).
//!
//! AdamW (decoupled weight decay, Loshchilov & Hutter), at step `t` with learning rate `lr`:
//! `m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;`
//! `p -= lr * wd * p; p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)`.
//!
//! SGD: `g += wd * p; buf = momentum * buf + g; step = nesterov ? g + momentum * buf : buf;`
//! `p -= lr * step`.

use crate::base::{Error, Result, TorchContext};
use crate::params::Parameter;
use crate::spec::{OptimConfig, OptimKind, Schedule};
use std::collections::BTreeMap;
use tch::Tensor;

/// AdamW hyper-parameters (the library API used by `pzt demo xor`).
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// An optimizer over a fixed set of trainable parameters.
pub struct Optimizer {
    pub config: OptimConfig,
    params: Vec<Parameter>,
    decay: Vec<bool>,
    step: i64,
    state: BTreeMap<String, Tensor>,
    fused: bool,
}

/// AdamW with the simple config (kept for the library API and the demo).
pub struct AdamW(Optimizer);

impl AdamW {
    /// AdamW over the trainable ones among `params`.
    pub fn new(params: Vec<Parameter>, c: AdamWConfig) -> Self {
        let config = OptimConfig {
            kind: OptimKind::Adamw,
            lr: c.lr,
            betas: [c.beta1, c.beta2],
            eps: c.eps,
            weight_decay: c.weight_decay,
            decay_norms_and_biases: false,
            momentum: 0.0,
            nesterov: false,
            clip_grad_norm: None,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            min_lr_ratio: 0.0,
        };
        AdamW(Optimizer::new(params, config))
    }
    /// Clears gradients.
    pub fn zero_grad(&mut self) -> Result<()> {
        self.0.zero_grad()
    }
    /// One step at the configured learning rate.
    pub fn step(&mut self) -> Result<()> {
        let lr = self.0.config.lr;
        self.0.step(lr)
    }
    /// Steps taken.
    pub fn steps(&self) -> i64 {
        self.0.steps()
    }
}

impl Optimizer {
    /// An optimizer for the trainable ones among `params`.
    pub fn new(params: Vec<Parameter>, config: OptimConfig) -> Self {
        let params: Vec<Parameter> = params.into_iter().filter(|p| p.trainable()).collect();
        let decay = params
            .iter()
            .map(|p| config.decay_norms_and_biases || p.shape().len() >= 2)
            .collect();
        Optimizer {
            config,
            params,
            decay,
            step: 0,
            state: BTreeMap::new(),
            fused: false,
        }
    }

    /// The parameters it updates.
    pub fn params(&self) -> &[Parameter] {
        &self.params
    }

    /// Steps taken.
    pub fn steps(&self) -> i64 {
        self.step
    }

    /// Whether the last step ran libtorch's fused AdamW kernel.
    pub fn last_step_fused(&self) -> bool {
        self.fused
    }

    /// Drops the gradients (PyTorch's `zero_grad(set_to_none=True)`): the next backward
    /// writes fresh ones, and a parameter that gets none is left alone by the next step.
    pub fn zero_grad(&mut self) -> Result<()> {
        let values: Vec<tch::Tensor> = self.params.iter().map(|p| p.value()).collect();
        crate::backend::clear_grads(&values)
    }

    /// The global L2 norm of the gradients (0 without gradients): each gradient's norm in
    /// float32 (as `clip_grad_norm_` computes it), combined in float64.
    pub fn grad_norm(&self) -> Result<f64> {
        let _ng = tch::no_grad_guard();
        let grads: Vec<tch::Tensor> = self.params.iter().filter_map(|p| p.grad()).collect();
        let norms = crate::backend::grad_norms(&grads)?;
        Ok(norms.iter().map(|n| n * n).sum::<f64>().sqrt())
    }

    /// The label of the first parameter whose gradient has a NaN or an infinity.
    pub fn first_bad_grad(&self) -> Result<Option<String>> {
        for p in &self.params {
            if let Some(g) = p.grad() {
                let ok = g
                    .f_isfinite()
                    .and_then(|t| t.f_all())
                    .ctx("check gradient")?
                    .f_int64_value(&[])
                    .ctx("check gradient")?;
                if ok == 0 {
                    return Ok(Some(p.label().to_string()));
                }
            }
        }
        Ok(None)
    }

    /// Scales all gradients so that their global norm is at most `max` (given the current
    /// norm `norm`).
    pub fn clip(&self, norm: f64, max: f64) -> Result<()> {
        if norm <= max || norm == 0.0 {
            return Ok(());
        }
        let _ng = tch::no_grad_guard();
        let scale = max / (norm + 1e-6);
        for p in &self.params {
            if let Some(mut g) = p.grad() {
                let _ = g.f_mul_scalar_(scale).ctx("clip gradients")?;
            }
        }
        Ok(())
    }

    fn take(&mut self, key: &str, like: &Tensor) -> Result<Tensor> {
        match self.state.remove(key) {
            Some(t) => Ok(t),
            None => like.f_zeros_like().ctx("optimizer state"),
        }
    }

    /// AdamW through libtorch's fused kernel, when every parameter with a gradient is a
    /// float32 tensor on one device. Returns false (nothing changed) when it does not apply.
    fn fused_adamw_step(&mut self, lr: f64) -> Result<bool> {
        let c = self.config.clone();
        if c.kind != OptimKind::Adamw {
            return Ok(false);
        }
        let mut groups: [Vec<(Parameter, Tensor)>; 2] = [vec![], vec![]];
        let mut device = None;
        for (p, &decay) in self.params.iter().zip(&self.decay) {
            let Some(g) = p.grad() else { continue };
            let w = p.value();
            if w.kind() != tch::Kind::Float
                || g.kind() != tch::Kind::Float
                || *device.get_or_insert(w.device()) != w.device()
            {
                return Ok(false);
            }
            groups[usize::from(decay && c.weight_decay != 0.0)].push((p.clone(), g));
        }
        for (gi, group) in groups.iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let mut ps = vec![];
            let mut gs = vec![];
            let mut ms = vec![];
            let mut vs = vec![];
            for (p, g) in group {
                let label = p.label().to_string();
                let m = self.take(&format!("m.{label}"), g)?;
                let v = self.take(&format!("v.{label}"), g)?;
                ps.push(p.value());
                gs.push(g.shallow_clone());
                ms.push(m.shallow_clone());
                vs.push(v.shallow_clone());
                self.state.insert(format!("m.{label}"), m);
                self.state.insert(format!("v.{label}"), v);
            }
            let h = crate::backend::FusedAdamW {
                step: self.step as f64,
                lr,
                beta1: c.betas[0],
                beta2: c.betas[1],
                weight_decay: if gi == 1 { c.weight_decay } else { 0.0 },
                eps: c.eps,
            };
            crate::backend::fused_adamw(&ps, &gs, &ms, &vs, h)?;
        }
        Ok(true)
    }

    /// One update with learning rate `lr` (parameters without a gradient are skipped). AdamW
    /// runs libtorch's fused kernel when all parameters are float32 on one device.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let _ng = tch::no_grad_guard();
        self.step += 1;
        self.fused = self.fused_adamw_step(lr)?;
        if self.fused {
            return Ok(());
        }
        let c = self.config.clone();
        let params = self.params.clone();
        let decays = self.decay.clone();
        for (p, &decay) in params.iter().zip(&decays) {
            let Some(g) = p.grad() else { continue };
            let label = p.label().to_string();
            let what = format!("{:?} step on `{label}`", c.kind);
            let mut w = p.value();
            let wd = if decay { c.weight_decay } else { 0.0 };
            let g32 = g.f_to_kind(tch::Kind::Float).ctx(&what)?;
            match c.kind {
                OptimKind::Adamw => self.adamw_update(&c, &label, &mut w, &g32, (lr, wd))?,
                OptimKind::Sgd => self.sgd_update(&c, &label, &mut w, g32, (lr, wd))?,
            }
        }
        Ok(())
    }

    /// AdamW's update of one parameter `w` (labelled `label`) with gradient `g32` in float32,
    /// at learning rate `lr` with weight decay `wd`.
    fn adamw_update(
        &mut self,
        c: &OptimConfig,
        label: &str,
        w: &mut Tensor,
        g32: &Tensor,
        (lr, wd): (f64, f64),
    ) -> Result<()> {
        let what = format!("{:?} step on `{label}`", c.kind);
        let (b1, b2) = (c.betas[0], c.betas[1]);
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        let mut m = self.take(&format!("m.{label}"), g32)?;
        let mut v = self.take(&format!("v.{label}"), g32)?;
        let _ = m.f_mul_scalar_(b1).ctx(&what)?;
        let _ = m
            .f_add_(&g32.f_mul_scalar(1.0 - b1).ctx(&what)?)
            .ctx(&what)?;
        let _ = v.f_mul_scalar_(b2).ctx(&what)?;
        let _ = v
            .f_add_(
                &g32.f_square()
                    .and_then(|s| s.f_mul_scalar(1.0 - b2))
                    .ctx(&what)?,
            )
            .ctx(&what)?;
        let denom = v
            .f_div_scalar(bc2)
            .and_then(|d| d.f_sqrt())
            .and_then(|d| d.f_add_scalar(c.eps))
            .ctx(&what)?;
        let upd = m
            .f_div_scalar(bc1)
            .and_then(|u| u.f_div(&denom))
            .and_then(|u| u.f_mul_scalar(lr))
            .ctx(&what)?;
        if wd != 0.0 {
            let _ = w.f_mul_scalar_(1.0 - lr * wd).ctx(&what)?;
        }
        let _ = w.f_sub_(&upd.f_to_kind(w.kind()).ctx(&what)?).ctx(&what)?;
        self.state.insert(format!("m.{label}"), m);
        self.state.insert(format!("v.{label}"), v);
        Ok(())
    }

    /// SGD's update (with momentum and Nesterov when set) of one parameter `w` (labelled
    /// `label`) with gradient `g32` in float32, at learning rate `lr` with weight decay `wd`.
    fn sgd_update(
        &mut self,
        c: &OptimConfig,
        label: &str,
        w: &mut Tensor,
        g32: Tensor,
        (lr, wd): (f64, f64),
    ) -> Result<()> {
        let what = format!("{:?} step on `{label}`", c.kind);
        let mut d = if wd != 0.0 {
            g32.f_add(
                &w.f_to_kind(tch::Kind::Float)
                    .and_then(|x| x.f_mul_scalar(wd))
                    .ctx(&what)?,
            )
            .ctx(&what)?
        } else {
            g32
        };
        if c.momentum > 0.0 {
            let key = format!("momentum.{label}");
            let buf = match self.state.remove(&key) {
                Some(mut b) => {
                    let _ = b.f_mul_scalar_(c.momentum).ctx(&what)?;
                    let _ = b.f_add_(&d).ctx(&what)?;
                    b
                }
                None => d.f_mul_scalar(1.0).ctx(&what)?,
            };
            d = if c.nesterov {
                d.f_add(&buf.f_mul_scalar(c.momentum).ctx(&what)?)
                    .ctx(&what)?
            } else {
                buf.shallow_clone()
            };
            self.state.insert(key, buf);
        }
        let _ = w
            .f_sub_(
                &d.f_mul_scalar(lr)
                    .and_then(|x| x.f_to_kind(w.kind()))
                    .ctx(&what)?,
            )
            .ctx(&what)?;
        Ok(())
    }

    /// The state tensors, keyed `m.<label>`, `v.<label>` (AdamW) or `momentum.<label>` (SGD).
    pub fn state(&self) -> &BTreeMap<String, Tensor> {
        &self.state
    }

    /// Restores the state and the step count (from a checkpoint). Every key must belong to a
    /// parameter of this optimizer, with the parameter's shape.
    pub fn load_state(&mut self, step: i64, state: Vec<(String, Tensor)>) -> Result<()> {
        let mut out = BTreeMap::new();
        for (k, t) in state {
            let label = k.split_once('.').map(|(_, l)| l).unwrap_or("");
            let Some(p) = self.params.iter().find(|p| p.label() == label) else {
                return Err(Error::Param(format!(
                    "optimizer state `{k}` belongs to no trainable parameter: `{label}` trained in that run and does not in this one, so the run was trained with another model or [strategy] (kind, trainable, freeze, LoRA targets) than this recipe builds; use the checkpoint's own recipe or train into another out_dir"
                )));
            };
            if t.kind() != tch::Kind::Float {
                return Err(Error::Param(format!(
                    "optimizer state `{k}` is {:?}; pzt keeps optimizer state in float32",
                    t.kind()
                )));
            }
            if p.shape() != t.size() {
                return Err(Error::Param(format!(
                    "optimizer state `{k}` has shape {:?}, the parameter {:?}",
                    t.size(),
                    p.shape()
                )));
            }
            let dev = p.value().device();
            out.insert(k, t.f_to_device(dev).ctx("optimizer state")?);
        }
        // AdamW keeps both moments of a parameter or neither.
        for k in out.keys() {
            let twin = match k.split_once('.') {
                Some(("m", l)) => format!("v.{l}"),
                Some(("v", l)) => format!("m.{l}"),
                _ => continue,
            };
            if !out.contains_key(&twin) {
                return Err(Error::Param(format!(
                    "optimizer state `{k}` is there but `{twin}` is missing"
                )));
            }
        }
        self.state = out;
        self.step = step;
        Ok(())
    }
}
