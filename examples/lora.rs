//! The fine-tuning toolshed from Rust: LoRA, freezing and activation checkpointing are
//! functions over selections that return new trees (sharing every untouched parameter).
//!
//! 1. builds a small transformer from a recipe table (`Plan::build`, seed 0);
//! 2. freezes it all (`freeze`), then adapts the Linears inside every `Attention` with rank-4
//!    LoRA (`loraify`): only the adapters train;
//! 3. wraps each block in `Checkpointed` (`checkpoint_activations`);
//! 4. takes one gradient step's worth of backward and shows that only adapters got gradients;
//! 5. merges the adapters back into their Linears (`merge_adapters`) and checks that the merged
//!    model computes what the adapted one does.
//!
//! Run: `source scripts/env.sh && cargo run --release --example lora`

use pzt::layers::toolshed::{checkpoint_activations, freeze, loraify, merge_adapters, LoraConfig};
use pzt::prelude::*;
use pzt::recipe::plan::Plan;
use pzt::tree::selector::Selector;
use tch::{Kind, Tensor};

fn selection(tree: &Node, text: &str) -> Result<Selection> {
    let s = Selector::parse(text).map_err(|e| Error::Config(e.message))?;
    Ok(s.select(tree))
}

fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("pzt-lora-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Config(e.to_string()))?;
    let recipe = dir.join("model.toml");
    std::fs::write(
        &recipe,
        "[model]\nbuilder = \"transformer\"\nvocab_size = 64\nd_model = 32\nnum_layers = 2\n\
         num_heads = 4\nmlp_hidden = 64\n",
    )
    .map_err(|e| Error::Config(e.to_string()))?;
    let r = pzt::recipe::Recipe::load(&recipe, &[])?;
    let b = Builder::new(0);
    let model = Plan::build(r, &pzt::builtin_registry(), &b)?.tree;

    let frozen = freeze(&select(&model))?;
    let cfg = LoraConfig {
        rank: 4,
        alpha: 8.0,
        ..LoraConfig::default()
    };
    let lora = loraify(&selection(&frozen, "Attention Linear")?, &cfg, &b)?;
    let ck = checkpoint_activations(&selection(&lora, "blocks.*")?)?;
    let count = |n: &Node| {
        n.trainable_parameters()
            .iter()
            .map(|p| p.numel())
            .sum::<i64>()
    };
    println!(
        "{} parameters, {} trainable after loraify ({} adapters), {} Checkpointed blocks",
        model.num_params(),
        count(&ck),
        select(&ck).at_instances_of("LowRankAdapter").count(),
        select(&ck).at_instances_of("Checkpointed").count()
    );

    // B starts at zero; give it values so that the adapters change the output.
    for p in ck.trainable_parameters() {
        if p.label().ends_with("lora_b.weights") {
            p.copy_from(&Tensor::full(
                p.shape(),
                0.05,
                (Kind::Float, tch::Device::Cpu),
            ))?;
        }
    }
    let tokens = Tensor::from_slice(&[1i64, 7, 3, 9, 4, 2]).reshape([1, 6]);
    let x = NamedTensor::wrap(tokens, &["batch", "seq"])?;
    let y = ck.forward(x.clone(), &SideInputs::new())?.into_tensor()?;
    y.tensor().sum(Kind::Float).backward();
    let with_grad: Vec<String> = ck
        .parameters()
        .iter()
        .filter(|p| p.grad().is_some())
        .map(|p| p.label().rsplit('.').take(2).collect::<Vec<_>>().join("<"))
        .collect();
    println!(
        "gradients reached {} parameters, all adapters: {}",
        with_grad.len(),
        with_grad.iter().all(|l| l.contains("lora"))
    );

    let merged = merge_adapters(&ck)?;
    let z = tch::no_grad(|| merged.forward(x, &SideInputs::new()))?.into_tensor()?;
    let diff = (y.tensor().detach() - z.tensor())
        .abs()
        .max()
        .double_value(&[]);
    println!(
        "merged: {} LowRankAdapter left, max |adapted - merged| = {diff:.1e}",
        select(&merged).at_instances_of("LowRankAdapter").count()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
