//! Pictures of models, arrays and runs (treescope's role): self-contained HTML pages with the
//! model tree (collapsible, parameters with statistics), arrays as heatmaps over named axes,
//! and run reports. The pages carry their data as JSON and their scripts inline; nothing is
//! fetched from a network.

pub mod array;
pub mod model;
pub mod page;
pub mod report;

pub use array::{stats, ArrayView, Stats};
pub use model::{model_data, ModelView};

/// The page data of a list of arrays (a capture): one section each, the first open.
pub fn arrays_data(title: &str, subtitle: &str, arrays: &[ArrayView]) -> serde_json::Value {
    serde_json::json!({
        "page": "arrays",
        "title": title,
        "subtitle": subtitle,
        "arrays": arrays.iter().map(ArrayView::to_json).collect::<Vec<_>>(),
    })
}
