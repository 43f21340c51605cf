//! A model assembled as data, without a recipe: a pretrained Llama (the test fixture in
//! `tests/fixtures/hf/llama-gqa`, or a directory given as the first argument), rank-8 LoRA on
//! its query and value projections, everything else frozen, and activation checkpointing on
//! every decoder block. The same `ModelSpec` builds with shapes only (to count parameters) and
//! with values (to run).
//!
//! Run: `source scripts/env.sh && cargo run --release --example model_spec [HF_DIR]`

use pzt::assembly::memory::count_params;
use pzt::assembly::{Action, ModelSpec, Rewrite, Select};
use pzt::layers::toolshed::LoraConfig;
use pzt::prelude::*;

fn main() -> Result<()> {
    let dir = std::env::args().nth(1).map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/llama-gqa"),
        std::path::PathBuf::from,
    );
    let lora = LoraConfig {
        rank: 8,
        alpha: 16.0,
        ..LoraConfig::default()
    };
    let spec = ModelSpec::hf(&dir)
        .with(Rewrite::new(
            Select::targets(["q_proj", "v_proj"]),
            Action::Lora {
                config: lora,
                init: None,
            },
        ))
        .with(Rewrite::new(
            Select::nothing(),
            Action::TrainOnly { adapters: true },
        ))
        .with(Rewrite::new(
            Select::selectors(["blocks.*"]),
            Action::Checkpoint,
        ));
    let registry = pzt::builtin_registry();
    let shapes = spec.build(&registry, &Builder::slots())?;
    let c = count_params(&shapes);
    println!(
        "{}: {} parameters, {} trainable (the adapters)",
        dir.display(),
        c.total,
        c.trainable
    );
    let model = spec.build(&registry, &Builder::new(0))?;
    let trainable: Vec<String> = model
        .trainable_parameters()
        .iter()
        .map(|p| p.label().to_string())
        .take(4)
        .collect();
    println!("first trainable parameters: {}", trainable.join(", "));
    Ok(())
}
