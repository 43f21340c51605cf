//! AdamW and SGD written over tensors, so that their state is ordinary tensors keyed by
//! parameter label (checkpointable).
//!
//! AdamW (decoupled weight decay, Loshchilov & Hutter):
//! `m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;`
//! `p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + lr * wd * p`.

use crate::error::{Result, TorchContext};
use crate::params::Parameter;
use std::collections::BTreeMap;
use tch::Tensor;

/// AdamW hyper-parameters.
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

/// AdamW over a set of parameters.
pub struct AdamW {
    pub config: AdamWConfig,
    params: Vec<Parameter>,
    step: i64,
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
}

impl AdamW {
    /// An optimizer for the trainable ones among `params`.
    pub fn new(params: Vec<Parameter>, config: AdamWConfig) -> Self {
        let params = params.into_iter().filter(|p| p.trainable()).collect();
        AdamW {
            config,
            params,
            step: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        }
    }

    /// Clears gradients.
    pub fn zero_grad(&mut self) {
        for p in &self.params {
            let mut v = p.value();
            v.zero_grad();
        }
    }

    /// The number of steps taken.
    pub fn steps(&self) -> i64 {
        self.step
    }

    /// One update from the accumulated gradients (parameters without a gradient are skipped).
    pub fn step(&mut self) -> Result<()> {
        let _ng = tch::no_grad_guard();
        self.step += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for p in &self.params {
            let g = match p.grad() {
                Some(g) => g,
                None => continue,
            };
            let label = p.label().to_string();
            let what = format!("AdamW step on `{label}`");
            let m = match self.m.remove(&label) {
                Some(m) => m,
                None => g.f_zeros_like().ctx(&what)?,
            };
            let v = match self.v.remove(&label) {
                Some(v) => v,
                None => g.f_zeros_like().ctx(&what)?,
            };
            let m = m
                .f_mul_scalar(c.beta1)
                .and_then(|m| m.f_add(&g.f_mul_scalar(1.0 - c.beta1)?))
                .ctx(&what)?;
            let v = v
                .f_mul_scalar(c.beta2)
                .and_then(|v| v.f_add(&g.f_square()?.f_mul_scalar(1.0 - c.beta2)?))
                .ctx(&what)?;
            let denom = v
                .f_div_scalar(bc2)
                .and_then(|d| d.f_sqrt())
                .and_then(|d| d.f_add_scalar(c.eps))
                .ctx(&what)?;
            let upd = m
                .f_div_scalar(bc1)
                .and_then(|u| u.f_div(&denom))
                .ctx(&what)?;
            let mut w = p.value();
            if c.weight_decay != 0.0 {
                let decay = w.f_mul_scalar(c.lr * c.weight_decay).ctx(&what)?;
                let _ = w.f_sub_(&decay).ctx(&what)?;
            }
            let _ = w.f_sub_(&upd.f_mul_scalar(c.lr).ctx(&what)?).ctx(&what)?;
            self.m.insert(label.clone(), m);
            self.v.insert(label, v);
        }
        Ok(())
    }
}
