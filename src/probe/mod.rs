//! Looking inside a running model (Penzai's `save_intermediates` and `isolate_submodel`): the
//! outputs of selected layers on one token sequence ([`capture`]), and one layer cut out with
//! what flowed into and out of it ([`isolate`]), to re-run on its own, edited or not
//! ([`replay`]).

pub mod capture;
pub mod isolate;
pub mod replay;
pub mod values;

pub use capture::{capture, token_input, Captured};
pub use isolate::{isolate, Isolated, Record};
pub use replay::{replay, Replayed};
