//! Looking inside a running model (Penzai's `save_intermediates` and `isolate_submodel`): the
//! outputs of selected layers on one token sequence ([`capture`]), and one layer cut out with
//! what flowed into and out of it, to re-run on its own ([`isolate`]).

pub mod capture;

pub use capture::{capture, token_input, Captured};
