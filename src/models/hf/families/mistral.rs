//! Mistral (`model_type = "mistral"`): Llama's layout and keys, and a sliding attention window
//! on every layer (`sliding_window`).

use super::{llama, Converter};
use crate::base::Result;
use crate::models::hf::config::{Cfg, Shared};
use crate::models::hf::Family;

pub const MISTRAL: Converter = Converter {
    family: Family::Mistral,
    model_type: "mistral",
    tied_by_default: false,
    convert,
    ignored: &["head_dim"],
    name_of: llama::name_of,
};

fn convert(c: &Cfg, s: &mut Shared) -> Result<()> {
    llama::convert(c, s)?;
    if let Some(w) = c.int("sliding_window")? {
        s.window.iter_mut().for_each(|x| *x = Some(w));
    }
    Ok(())
}
