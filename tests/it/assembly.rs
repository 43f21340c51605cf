//! The model assembled as data (`pzt::assembly`): a `ModelSpec` written in Rust builds the
//! same tree as the recipe that says the same thing, rewrites fail naming the rewrite, and
//! each source builds.

use crate::common::{fixture, tmpdir};
use pzt::assembly::{apply, Action, Context, ModelSpec, Problem, Rewrite, Select};
use pzt::layers::toolshed::LoraConfig;
use pzt::prelude::*;

fn lora(rank: i64) -> Action {
    Action::Lora {
        config: LoraConfig {
            rank,
            alpha: 16.0,
            ..LoraConfig::default()
        },
        init: None,
    }
}

fn trainable(tree: &Node) -> Vec<(String, Vec<i64>)> {
    tree.trainable_parameters()
        .iter()
        .map(|p| (p.label().to_string(), p.value().size()))
        .collect()
}

/// The arguments of a two-block `transformer`.
fn tiny_transformer() -> toml::Table {
    let mut args = toml::Table::new();
    for (k, v) in [
        ("vocab_size", 32),
        ("d_model", 16),
        ("num_layers", 2),
        ("num_heads", 2),
        ("mlp_hidden", 32),
    ] {
        args.insert(k.into(), toml::Value::Integer(v));
    }
    args
}

#[test]
fn a_rust_model_spec_builds_what_the_recipe_builds() {
    let d = tmpdir("assembly", "same");
    let hf = fixture("hf/llama-gqa");
    let recipe = d.join("r.toml");
    std::fs::write(
        &recipe,
        format!(
            "[model]\nhf = {hf:?}\n[strategy]\nkind = \"lora\"\n[strategy.lora]\ntargets = [\"q_proj\", \"v_proj\"]\nrank = 4\nalpha = 16.0\n"
        ),
    )
    .unwrap();
    let registry = pzt::builtin_registry();
    let r = pzt::recipe::Recipe::load(&recipe, &[]).unwrap();
    let from_recipe = pzt::recipe::plan::Plan::build(r, &registry, &Builder::new(0))
        .unwrap()
        .tree;
    let spec = ModelSpec::hf(&hf)
        .with(Rewrite::new(Select::targets(["q_proj", "v_proj"]), lora(4)))
        .with(Rewrite::new(
            Select::nothing(),
            Action::TrainOnly { adapters: true },
        ));
    let from_rust = spec.build(&registry, &Builder::new(0)).unwrap();
    let t = trainable(&from_rust);
    assert_eq!(t, trainable(&from_recipe));
    assert!(
        !t.is_empty() && t.iter().all(|(l, _)| l.contains(".lora_")),
        "{t:?}"
    );
    // Same seed, same labels: the same values.
    for (a, b) in from_rust
        .trainable_parameters()
        .iter()
        .zip(from_recipe.trainable_parameters())
    {
        let diff = (a.value() - b.value()).abs().max().double_value(&[]);
        assert_eq!(diff, 0.0, "{}", a.label());
    }
    // Shapes only: the same counts as the recipe's plan.
    let shapes = spec.build(&registry, &Builder::slots()).unwrap();
    let c = pzt::assembly::memory::count_params(&shapes);
    assert_eq!(
        c.trainable,
        t.iter()
            .map(|(_, s)| s.iter().product::<i64>())
            .sum::<i64>()
    );
}

#[test]
fn rewrites_fail_naming_the_rewrite_and_the_problem() {
    let registry = pzt::builtin_registry();
    let b = Builder::slots();
    let spec = ModelSpec::hf(fixture("hf/llama-gqa"));
    let tree = spec.build_source(&registry, &b).unwrap();
    let arch =
        pzt::models::hf::read_config(std::path::Path::new(&fixture("hf/llama-gqa"))).unwrap();
    let cx = Context::new(&b).with_arch(&arch).unwrap();
    let rewrites = [
        Rewrite::new(Select::selectors(["Attention"]), Action::Freeze),
        Rewrite::new(Select::targets(["q_projj"]), lora(2)),
    ];
    let e = apply(tree.clone(), &rewrites, &cx).unwrap_err();
    assert_eq!(e.index, 1);
    match &e.problem {
        Problem::TargetMatchesNothing { target, modules } => {
            assert_eq!(target, "q_projj");
            assert!(modules.iter().any(|m| m == "q_proj"), "{modules:?}");
        }
        other => panic!("{other:?}"),
    }
    let e = apply(
        tree.clone(),
        &[Rewrite::new(
            Select::Selectors {
                selectors: vec!["Attention".into()],
                expect_count: Some(5),
            },
            Action::Remove,
        )],
        &cx,
    )
    .unwrap_err();
    assert!(
        matches!(
            e.problem,
            Problem::Count {
                found: 2,
                expected: 5,
                ..
            }
        ),
        "{e:?}"
    );
    let e = apply(
        tree,
        &[Rewrite::new(
            Select::selectors(["Sequential >"]),
            Action::Freeze,
        )],
        &cx,
    )
    .unwrap_err();
    assert!(matches!(e.problem, Problem::BadSelector { .. }), "{e:?}");
    // Built from a spec, a failing rewrite names the recipe key that wrote it.
    let spec = ModelSpec::hf(fixture("hf/llama-gqa")).with(
        Rewrite::new(Select::selectors(["NoSuchKind"]), Action::Freeze)
            .written_at("strategy", "freeze"),
    );
    match spec.build(&registry, &b) {
        Err(Error::InSection {
            section,
            field,
            message,
        }) => {
            assert_eq!((section.as_str(), field.as_str()), ("strategy", "freeze"));
            assert!(
                message.contains("`NoSuchKind` matches nothing"),
                "{message}"
            );
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn each_source_builds() {
    let registry = pzt::builtin_registry();
    let args = tiny_transformer();
    let built = ModelSpec::builder("transformer", args.clone())
        .build(&registry, &Builder::new(0))
        .unwrap();
    assert!(pzt::assembly::memory::count_params(&built).total > 0);
    let e = ModelSpec::builder("transformr", args)
        .build(&registry, &Builder::slots())
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown builder `transformr`"), "{e}");
    let layers = ModelSpec::layers(|b| {
        pzt::models::hf::read_config(std::path::Path::new(&fixture("hf/llama-gqa")))?
            .build(b)
            .map(|d| d.tree)
    });
    assert!(layers.build(&registry, &Builder::slots()).is_ok());
    let e = ModelSpec::hf("/nonexistent")
        .build(&registry, &Builder::slots())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a HuggingFace model directory"), "{e}");
}

#[test]
fn structural_rewrites_from_rust_replace_wrap_and_insert() {
    use pzt::layers::grouping::Residual;
    use pzt::layers::misc::{Identity, SaveIntermediate};
    let registry = pzt::builtin_registry();
    let args = tiny_transformer();
    let base = ModelSpec::builder("transformer", args);
    let plain = base.build(&registry, &Builder::slots()).unwrap();
    let kinds = |t: &Node| -> Vec<(String, String)> {
        let mut out = vec![];
        t.walk(&mut |p, n| out.push((p.join("."), n.kind().to_string())));
        out
    };
    // Rewrites run in order; each new layer is built at the place the engine gives (a
    // SaveIntermediate's state label follows its path), and an insertion into a numbered
    // sequence renumbers what follows.
    let spec = base
        .clone()
        .wrap(Select::selectors(["blocks.1"]), |place, _| {
            let inner = place.wrapped.cloned();
            Ok(Residual::build(
                inner.unwrap_or_else(|| Node::new(Identity {})),
            ))
        })
        .insert(Select::selectors(["blocks.0"]), true, |place, b| {
            Ok(SaveIntermediate::build(&b.root().pp(place.path.join("."))))
        });
    let t = spec.build(&registry, &Builder::slots()).unwrap();
    let k = kinds(&t);
    for (path, kind) in [
        ("blocks.1", "SaveIntermediate"),
        ("blocks.2", "Residual"),
        ("blocks.2.delta", "Sequential"),
        ("blocks.2.delta.mlp", "Residual"),
    ] {
        assert!(k.contains(&(path.into(), kind.into())), "{path}: {k:?}");
    }
    assert_eq!(k.len(), kinds(&plain).len() + 2);
    let labels: Vec<String> = t
        .state_variables()
        .iter()
        .map(|v| v.label().to_string())
        .collect();
    assert_eq!(labels, ["blocks.0_after.value"]);
    // Replace drops the old subtree's parameters; the count follows.
    let replaced = base
        .clone()
        .replace(Select::selectors(["blocks.1"]), |_, _| {
            Ok(Node::new(Identity {}))
        })
        .build(&registry, &Builder::slots())
        .unwrap();
    let count = |t: &Node| pzt::assembly::memory::count_params(t).total;
    assert!(count(&replaced) < count(&plain));
    // Without layers to put in place, the engine says so, naming the rewrite.
    let e = apply(
        plain,
        &[Rewrite::new(
            Select::selectors(["blocks.0"]),
            Action::Replace { layer: 0 },
        )],
        &Context::new(&Builder::slots()),
    )
    .unwrap_err()
    .into_error()
    .to_string();
    assert!(e.contains("rewrite 0") && e.contains("with_layers"), "{e}");
}

#[test]
fn a_recipe_compiles_to_a_model_spec_of_data() {
    let d = tmpdir("assembly", "of-data");
    let hf = fixture("hf/llama-gqa");
    let recipe = d.join("r.toml");
    std::fs::write(
        &recipe,
        format!(
            "[model]\nhf = {hf:?}\n\n[[patch]]\nselect = \"final_norm\"\naction = \"wrap\"\nwith = {{ type = \"Sequential\", children = {{ save = {{ type = \"Identity\" }} }} }}\n\n[[patch]]\nselect = \"embed\"\naction = \"freeze\"\n\n[strategy]\nkind = \"lora\"\n[strategy.lora]\ntargets = [\"q_proj\"]\nrank = 2\n"
        ),
    )
    .unwrap();
    let registry = pzt::builtin_registry();
    let r = pzt::recipe::Recipe::load(&recipe, &[]).unwrap();
    let spec = pzt::recipe::plan::model_spec(&r, &registry).unwrap();
    // The pretrained directory is the source; the patches and the strategy are rewrites.
    assert!(
        matches!(&spec.source, pzt::assembly::Source::HfDir(p) if p.ends_with("hf/llama-gqa")),
        "{spec:?}"
    );
    let actions: Vec<String> = spec
        .rewrites
        .iter()
        .map(|w| {
            format!("{:?}", w.action)
                .split([' ', '{', '('])
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(actions, ["Wrap", "Freeze", "Lora", "TrainOnly"], "{spec:?}");
    // It builds what the planner builds.
    let planned = pzt::recipe::plan::Plan::build(r, &registry, &Builder::new(0))
        .unwrap()
        .tree;
    let built = spec.build(&registry, &Builder::new(0)).unwrap();
    assert_eq!(built.to_toml().unwrap(), planned.to_toml().unwrap());
    assert_eq!(trainable(&built), trainable(&planned));
}
