//! Pictures of models, arrays and runs (treescope's role): self-contained HTML pages with the
//! model tree (collapsible, parameters with statistics), arrays as heatmaps over named axes,
//! and run reports. The pages carry their data as JSON and their scripts inline; nothing is
//! fetched from a network.

pub mod array;
pub mod model;
pub mod page;

pub use array::{stats, ArrayView, Stats};
pub use model::{model_data, ModelView};
