//! The toolshed: LoRA/DoRA adapters, freezing and activation checkpointing, as functions over
//! selections.
use crate::common::*;
use pzt::layers::toolshed::{
    checkpoint_activations, freeze, loraify, merge_adapters, train_only, LoraConfig,
};
use pzt::prelude::*;
use pzt::recipe::plan::Plan;
use pzt::recipe::Recipe;
use pzt::tree::selector::Selector;
use tch::{Kind, Tensor};

fn tiny(dropout: f64, seed: u64) -> Node {
    let text = format!(
        "[model]\nbuilder = \"transformer\"\nvocab_size = 32\nd_model = 16\nnum_layers = 2\n\
         num_heads = 4\nmlp_hidden = 24\ndropout = {dropout}\n"
    );
    let dir = std::env::temp_dir().join(format!("pzt-toolshed-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(format!("r{}.toml", (dropout * 100.0) as i64));
    std::fs::write(&f, text).unwrap();
    let r = Recipe::load(&f, &[]).unwrap();
    Plan::build(r, &pzt::builtin_registry(), &Builder::new(seed))
        .unwrap()
        .tree
}

fn sel(tree: &Node, s: &str) -> Selection {
    Selector::parse(s).unwrap().select(tree)
}

fn tokens() -> NamedTensor {
    let t = Tensor::from_slice(&[1i64, 5, 7, 3, 9, 2, 4, 4, 8, 31, 0, 6]).reshape([2, 6]);
    NamedTensor::wrap(t, &["batch", "seq"]).unwrap()
}

fn with_stream(seed: u64) -> SideInputs {
    SideInputs::new().with("random_stream", SideValue::Stream(RandomStream::new(seed)))
}

/// A loss on the logits, backpropagated; returns the loss and the gradients by label.
fn loss_and_grads(tree: &Node, side: &SideInputs) -> (f64, Vec<(String, Option<Tensor>)>) {
    let y = tree.forward(tokens(), side).unwrap().into_tensor().unwrap();
    let w = randn(&y.tensor().size(), 99);
    let loss = (y.tensor() * w).sum(Kind::Float);
    loss.backward();
    let grads = tree
        .parameters()
        .iter()
        .map(|p| (p.label().to_string(), p.grad()))
        .collect();
    (loss.double_value(&[]), grads)
}

fn logits(tree: &Node) -> Tensor {
    tch::no_grad(|| {
        tree.forward(tokens(), &SideInputs::new())
            .unwrap()
            .into_tensor()
            .unwrap()
            .tensor()
            .shallow_clone()
    })
}

#[test]
fn checkpointed_blocks_give_the_plain_gradients_with_dropout() {
    let plain = tiny(0.2, 3);
    let ck_base = tiny(0.2, 3);
    let ck = checkpoint_activations(&sel(&ck_base, "blocks.*")).unwrap();
    assert_eq!(select(&ck).at_instances_of("Checkpointed").count(), 2);
    let (l1, g1) = loss_and_grads(&plain, &with_stream(11));
    let (l2, g2) = loss_and_grads(&ck, &with_stream(11));
    assert!((l1 - l2).abs() <= 1e-6 * l1.abs().max(1.0), "{l1} vs {l2}");
    assert_eq!(g1.len(), g2.len());
    for ((a, ga), (b, gb)) in g1.iter().zip(&g2) {
        assert_eq!(a, b);
        let (ga, gb) = (ga.as_ref().unwrap(), gb.as_ref().unwrap());
        let d = max_abs_diff(ga, gb);
        assert!(d <= 1e-6, "gradient of {a} differs by {d}");
        assert!(
            ga.abs().max().double_value(&[]) > 0.0,
            "{a} got no gradient"
        );
    }
}

#[test]
fn checkpointed_is_plain_without_grad_and_composes_with_lora_and_freezing() {
    let base = tiny(0.0, 4);
    let b = Builder::new(5);
    let cfg = LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.1,
        dora: true,
    };
    let make = || {
        let t = tiny(0.0, 4);
        let t = freeze(&select(&t)).unwrap();
        let t = loraify(&sel(&t, "Attention Linear"), &cfg, &b).unwrap();
        // Make B non-zero so that the adapters matter.
        for p in t.parameters() {
            if p.label().contains("lora_b") {
                p.copy_from(&(randn(&p.shape(), 7) * 0.1)).unwrap();
            }
        }
        t
    };
    let lora = make();
    let ck = checkpoint_activations(&sel(&make(), "blocks.*")).unwrap();
    assert!(max_abs_diff(&logits(&lora), &logits(&ck)) <= 1e-6);
    let (_, g1) = loss_and_grads(&lora, &with_stream(2));
    let (_, g2) = loss_and_grads(&ck, &with_stream(2));
    let mut n = 0;
    for ((a, ga), (_, gb)) in g1.iter().zip(&g2) {
        match (ga, gb) {
            (Some(x), Some(y)) => {
                n += 1;
                assert!(
                    a.contains("lora") || a.contains("magnitude"),
                    "{a} was frozen"
                );
                assert!(max_abs_diff(x, y) <= 1e-6, "{a}");
            }
            (None, None) => assert!(!a.contains("lora"), "{a} got no gradient"),
            _ => panic!("{a}: gradient in one run only"),
        }
    }
    // q, k, v in 2 blocks, each with lora_a, lora_b and magnitude.
    assert_eq!(n, 2 * 3 * 3);
    drop(base);
}

#[test]
fn lora_and_dora_start_as_the_pretrained_model_and_merge_exactly() {
    let plain = tiny(0.0, 6);
    let before = logits(&plain);
    for dora in [false, true] {
        let cfg = LoraConfig {
            rank: 3,
            alpha: 6.0,
            dropout: 0.0,
            dora,
        };
        let t = loraify(&sel(&plain, "Linear"), &cfg, &Builder::new(1));
        // A norm's scale is a Linear with no input axes: not adaptable, with the path.
        let err = t.err().unwrap().to_string();
        assert!(err.contains("contracting"), "{err}");
        let t = loraify(&sel(&plain, "Attention Linear"), &cfg, &Builder::new(1)).unwrap();
        let t = loraify(&sel(&t, "blocks.*.mlp.**.down"), &cfg, &Builder::new(1)).unwrap();
        assert_eq!(select(&t).at_instances_of("LowRankAdapter").count(), 8);
        assert!(max_abs_diff(&before, &logits(&t)) <= 1e-5, "dora={dora}");
        for p in t.parameters() {
            if p.label().contains("lora_b") {
                p.copy_from(&(randn(&p.shape(), 3) * 0.3)).unwrap();
            }
            if p.label().ends_with("magnitude") {
                let v = p.value() * 1.5;
                p.copy_from(&v).unwrap();
            }
        }
        let adapted = logits(&t);
        assert!(max_abs_diff(&before, &adapted) > 1e-3);
        let merged = merge_adapters(&t).unwrap();
        assert!(
            merged.same_structure(&plain),
            "merging gives the plain tree back"
        );
        let d = max_abs_diff(&adapted, &logits(&merged));
        assert!(d <= 1e-4, "dora={dora}: merged differs by {d}");
    }
}

#[test]
fn frozen_parameters_get_no_gradient_and_share_storage() {
    let t = tiny(0.0, 8);
    let f = freeze(&sel(&t, "embed")).unwrap();
    let only = train_only(&sel(&t, "final_norm")).unwrap();
    let trainable = |n: &Node| n.trainable_parameters().len();
    assert_eq!(trainable(&f), trainable(&t) - 1);
    assert_eq!(trainable(&only), 1);
    let (_, g) = loss_and_grads(&only, &SideInputs::new());
    for (label, grad) in g {
        assert_eq!(grad.is_some(), label.starts_with("final_norm"), "{label}");
    }
    // The frozen view shares storage with the original.
    let p = only
        .parameters()
        .into_iter()
        .find(|p| p.label() == "embed.embeddings")
        .unwrap();
    let orig = t
        .parameters()
        .into_iter()
        .find(|p| p.label() == "embed.embeddings")
        .unwrap();
    orig.copy_from(&Tensor::zeros(
        orig.shape(),
        (Kind::Float, tch::Device::Cpu),
    ))
    .unwrap();
    assert_eq!(p.value().abs().sum(Kind::Float).double_value(&[]), 0.0);
}
