//! The built-in example run by `pzt demo xor` (the README's main command until `pzt train`
//! exists): an MLP built from combinators learns XOR with AdamW.

use crate::base::{Result, TorchContext};
use crate::layers::misc::Activation;
use crate::models::mlp::mlp;
use crate::named::NamedTensor;
use crate::train::losses::mse;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::tree::{Builder, Node, SideInputs};
use tch::{Device, Kind, Tensor};

/// Settings of the XOR run.
#[derive(Debug, Clone)]
pub struct XorConfig {
    pub seed: u64,
    pub max_steps: usize,
    pub target_loss: f64,
    pub lr: f64,
    pub hidden: i64,
    pub device: Device,
}

impl Default for XorConfig {
    fn default() -> Self {
        XorConfig {
            seed: 0,
            max_steps: 2000,
            target_loss: 1e-3,
            lr: 0.03,
            hidden: 8,
            device: Device::Cpu,
        }
    }
}

/// What the run did.
#[derive(Debug, Clone)]
pub struct XorReport {
    pub model: Node,
    /// (step, loss) every step.
    pub losses: Vec<(usize, f64)>,
    pub predictions: Vec<f64>,
}

/// The four XOR examples: inputs `{batch: 4, features: 2}`, targets `{batch: 4, features: 1}`.
pub fn xor_data(device: Device) -> Result<(NamedTensor, NamedTensor)> {
    let x = Tensor::from_slice(&[0f32, 0., 0., 1., 1., 0., 1., 1.])
        .f_reshape([4, 2])
        .ctx("xor data")?;
    let y = Tensor::from_slice(&[0f32, 1., 1., 0.])
        .f_reshape([4, 1])
        .ctx("xor data")?;
    Ok((
        NamedTensor::wrap(
            x.f_to_device(device).ctx("xor data")?,
            &["batch", "features"],
        )?,
        NamedTensor::wrap(
            y.f_to_device(device).ctx("xor data")?,
            &["batch", "features"],
        )?,
    ))
}

/// Trains until the loss is below `target_loss` or `max_steps` is reached, calling `on_step`
/// after each step.
pub fn train_xor(cfg: &XorConfig, mut on_step: impl FnMut(usize, f64)) -> Result<XorReport> {
    let b = Builder::new(cfg.seed).on(cfg.device).dtype(Kind::Float);
    let model = mlp(
        &b.scope("mlp"),
        "features",
        "hidden",
        &[2, cfg.hidden, 1],
        Activation::Tanh,
    )?;
    let (x, y) = xor_data(cfg.device)?;
    let mut opt = AdamW::new(
        model.parameters(),
        AdamWConfig {
            lr: cfg.lr,
            ..Default::default()
        },
    );
    let side = SideInputs::new();
    let mut losses = vec![];
    for step in 1..=cfg.max_steps {
        opt.zero_grad()?;
        let pred = model.forward(x.clone(), &side)?.into_tensor()?;
        let loss = mse(&pred, &y)?;
        loss.f_backward().ctx("backward")?;
        opt.step()?;
        let l = loss.f_double_value(&[]).ctx("loss")?;
        losses.push((step, l));
        on_step(step, l);
        if l < cfg.target_loss {
            break;
        }
    }
    let pred = {
        let _ng = tch::no_grad_guard();
        model.forward(x, &side)?.into_tensor()?
    };
    Ok(XorReport {
        model,
        losses,
        predictions: pred.to_vec_f64()?,
    })
}
