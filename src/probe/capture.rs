//! `pzt capture`: run a model on one token sequence with a `SaveIntermediate` after each
//! selected subtree, and return what each saved (a tuple output gives one array per item,
//! named `PATH[i]`).

use crate::base::{Error, Result, TorchContext};
use crate::layers::toolshed::{saved_values, saving_intermediates};
use crate::models::generate::LmAxes;
use crate::named::{NamedTensor, Value};
use crate::tree::{Node, Selection, SideInputs};
use tch::{Device, Tensor};

/// One captured array: the subtree's path (`<root>` for the root) and its output.
#[derive(Debug, Clone)]
pub struct Captured {
    pub name: String,
    pub value: NamedTensor,
}

/// The tokens as the model's input: `{batch: 1, seq: T}` int64 on `device`.
pub fn token_input(tokens: &[i64], ax: &LmAxes, device: Device) -> Result<NamedTensor> {
    let t = Tensor::from_slice(tokens)
        .f_reshape([1, tokens.len() as i64])
        .and_then(|x| x.f_to_device(device))
        .ctx("tokens")?;
    NamedTensor::wrap(t, &[ax.batch.as_str(), ax.seq.as_str()])
}

fn flatten(name: String, v: Value, out: &mut Vec<Captured>) {
    match v {
        Value::Tensor(t) => out.push(Captured {
            name,
            value: t.detach(),
        }),
        Value::Tuple(items) => {
            for (i, item) in items.into_iter().enumerate() {
                flatten(format!("{name}[{i}]"), item, out);
            }
        }
    }
}

/// Runs `sel`'s tree on `tokens` (no gradients) and returns the output of every selected
/// subtree, in the selection's order, with the model's output.
pub fn capture(
    sel: &Selection,
    tokens: &[i64],
    ax: &LmAxes,
    side: &SideInputs,
    device: Device,
) -> Result<(Vec<Captured>, NamedTensor)> {
    if sel.count() == 0 {
        return Err(Error::Select(
            "the selector matches nothing in this model".into(),
        ));
    }
    let (tree, saved): (Node, _) = saving_intermediates(sel)?;
    let x = token_input(tokens, ax, device)?;
    let _ng = tch::no_grad_guard();
    let y = tree.forward(x, side)?.into_tensor()?;
    let mut out = vec![];
    for (path, v) in saved_values(&saved)? {
        let name = if path.is_empty() {
            "<root>".to_string()
        } else {
            path
        };
        flatten(name, v, &mut out);
    }
    Ok((out, y.detach()))
}
