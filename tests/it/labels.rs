//! Parameter labels are tree paths for every builder: the native `transformer` and `mlp`
//! builders, the Hugging Face families, the attention builder, recipe layer tables. A shared
//! parameter is labelled by its first place in the tree. Init names keep the values a native
//! model had before labels became paths.

use pzt::models::decoder::Role;
use pzt::models::hf::transform::Transform;
use pzt::prelude::*;
use pzt::recipe::plan::Plan;
use pzt::recipe::Recipe;
use std::collections::BTreeSet;
use std::path::Path;

/// Every parameter's label is `<path>.<name>` at its first place in the tree.
fn assert_labels_are_paths(tree: &Node, what: &str) {
    let mut seen = BTreeSet::new();
    let mut checked = 0;
    for (path, name, e) in tree.all_param_entries() {
        if !seen.insert(e.label().to_string()) {
            continue;
        }
        let want = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        assert_eq!(e.label(), want, "{what}: label of `{want}`");
        checked += 1;
    }
    assert!(checked > 0, "{what}: no parameters");
}

fn recipe_tree(text: &str) -> Node {
    // A file per call: the tests of this file run in parallel.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("pzt-labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(format!("r{n}.toml"));
    std::fs::write(&f, text).unwrap();
    let r = Recipe::load(&f, &[]).unwrap();
    Plan::tree_only(&r, &pzt::builtin_registry()).unwrap()
}

#[test]
fn transformer_builder_labels_are_paths() {
    for extra in [
        "tie_embeddings = true",
        "num_kv_heads = 2",
        "mlp = \"gelu\"\nnorm = \"layer\"\nattention_bias = true\ndropout = 0.1",
        "mlp = \"geglu\"\nsliding_window = 4\nhead_dim = 8",
    ] {
        let tree = recipe_tree(&format!(
            "[model]\nbuilder = \"transformer\"\nvocab_size = 32\nd_model = 16\nnum_layers = 2\nnum_heads = 4\nmlp_hidden = 24\n{extra}\n"
        ));
        assert_labels_are_paths(&tree, extra);
    }
}

#[test]
fn mlp_builder_and_layer_tables_labels_are_paths() {
    assert_labels_are_paths(
        &recipe_tree("[model]\nbuilder = \"mlp\"\nwidths = [2, 8, 8, 1]\n"),
        "mlp",
    );
    for r in ["recipes/mlp.toml", "recipes/tiny-transformer.toml"] {
        let recipe = Recipe::load(Path::new(r), &[]).unwrap();
        let tree = Plan::tree_only(&recipe, &pzt::builtin_registry()).unwrap();
        assert_labels_are_paths(&tree, r);
    }
}

#[test]
fn hf_families_labels_are_paths_and_every_parameter_has_a_role() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        // Model directories (the tokenizer-only fixtures have no config.json).
        .filter(|p| p.join("config.json").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 9);
    for case in cases {
        let arch = pzt::models::hf::read_config(&case).unwrap();
        let built = arch.build(&Builder::slots()).unwrap();
        let what = case.display().to_string();
        assert_labels_are_paths(&built.tree, &what);
        let labels: BTreeSet<String> = built
            .tree
            .all_param_entries()
            .into_iter()
            .map(|(_, _, e)| e.label().to_string())
            .collect();
        let with_role: BTreeSet<String> = built.parts.iter().map(|(l, _)| l.clone()).collect();
        assert_eq!(labels, with_role, "{what}: parameters without a role");
        assert_eq!(
            built
                .parts
                .iter()
                .filter(|(_, r)| *r == Role::Embedding)
                .count(),
            1
        );
        // Every role names one tensor (GPT-NeoX's fused QKV names one tensor three times),
        // except the experts stored one by one: a tensor per expert.
        let names = pzt::models::hf::names::weight_map(&arch).unwrap();
        let per_expert = names
            .iter()
            .filter(|(_, _, tr)| {
                matches!(tr, Transform::Expert { .. } | Transform::ExpertBias { .. })
            })
            .count();
        let stacked: BTreeSet<&String> = names
            .iter()
            .filter(|(_, _, tr)| {
                matches!(tr, Transform::Expert { .. } | Transform::ExpertBias { .. })
            })
            .map(|(l, _, _)| l)
            .collect();
        assert_eq!(
            names.len() - per_expert + stacked.len(),
            labels.len(),
            "{what}"
        );
        if let Some(m) = &arch.decoder.moe {
            assert_eq!(per_expert, stacked.len() * m.num_experts as usize, "{what}");
        }
    }
}

#[test]
fn attention_builder_labels_are_paths() {
    let b = Builder::slots();
    let mut c = SelfAttentionConfig::new(16, 4, 4);
    c.num_kv_heads = 2;
    c.qkv_bias = true;
    c.output_bias = true;
    c.qk_norm_eps = Some(1e-6);
    let att = c.build(&b.scope("")).unwrap();
    assert_labels_are_paths(&att, "SelfAttentionConfig");
}

#[test]
fn init_names_keep_the_values_of_the_builder_scopes() {
    // The query projection sits (and is labelled) at `...attention.attention.input_to_query
    // .linear`, but draws its initial value from the builder's scope name `...attention.query
    // .linear`, as it always did: a recipe initializes the same on every version.
    let text = "[model]\nbuilder = \"transformer\"\nvocab_size = 32\nd_model = 16\nnum_layers = 1\nnum_heads = 4\nmlp_hidden = 24\n";
    let dir = std::env::temp_dir().join(format!("pzt-init-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("r.toml");
    std::fs::write(&f, text).unwrap();
    let r = Recipe::load(&f, &[]).unwrap();
    let tree = Plan::build(r, &pzt::builtin_registry(), &Builder::new(7))
        .unwrap()
        .tree;
    for (at, init_name) in [
        (
            "blocks.0.attention.delta.attention.attention.input_to_query.linear",
            "blocks.0.attention.delta.attention.query.linear.weights",
        ),
        (
            "blocks.0.mlp.delta.mlp.gate_up.0.linear",
            "blocks.0.mlp.delta.mlp.gate.weights",
        ),
        (
            "blocks.0.mlp.delta.mlp.gate_up.1",
            "blocks.0.mlp.delta.mlp.up.weights",
        ),
    ] {
        let path: Vec<String> = at.split('.').map(String::from).collect();
        let got = tree.get(&path).unwrap().param("weights").unwrap();
        let want = pzt::params::init::Initializer::FanIn { scale: 1.0 }
            .make(
                7,
                init_name,
                &got.size(),
                16,
                tch::Kind::Float,
                tch::Device::Cpu,
            )
            .unwrap();
        assert_eq!((&got - &want).abs().max().double_value(&[]), 0.0, "{at}");
    }
}
