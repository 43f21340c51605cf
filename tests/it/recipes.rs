//! Recipes from the CLI: the shipped recipes plan, show and select; --set; include; patches;
//! round trip recipe -> tree -> TOML -> tree; golden error messages for bad recipes.
use pzt::recipe::model::ModelBuilder;
use pzt::recipe::plan::Plan;
use pzt::recipe::Recipe;
use pzt::tree::{select, Builder};
use std::path::Path;

use crate::common::run_pzt as pzt;

fn plan_json(args: &[&str]) -> serde_json::Value {
    let mut a = vec!["plan"];
    a.extend_from_slice(args);
    a.push("--json");
    let (code, out, err) = pzt(&a);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn shipped_recipes_plan() {
    for entry in std::fs::read_dir("recipes").unwrap() {
        let p = entry.unwrap().path();
        if p.extension().map(|e| e == "toml").unwrap_or(false) {
            let (code, out, err) = pzt(&["plan", p.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {err}", p.display());
            assert!(
                out.contains("parameters") && out.contains("memory"),
                "{out}"
            );
        }
    }
}

#[test]
fn llama2_7b_plans_with_the_exact_parameter_count() {
    let j = plan_json(&["recipes/llama2-7b.toml"]);
    assert_eq!(j["parameters"]["total"], 6_738_415_616i64);
    assert_eq!(j["output"]["axes"]["vocab"], 32000);
    // bf16 parameters: 2 bytes each.
    assert_eq!(j["memory_bytes"]["parameters"], 2 * 6_738_415_616i64);
    let (_, out, _) = pzt(&["plan", "recipes/llama2-7b.toml"]);
    assert!(out.contains("6,738,415,616 total"), "{out}");
}

#[test]
fn plan_reports_shapes_counts_and_memory() {
    let j = plan_json(&["recipes/mlp.toml"]);
    assert_eq!(j["parameters"]["total"], 4 * 64 + 64 + 64 + 1);
    assert_eq!(j["output"]["axes"]["features"], 1);
    assert_eq!(j["output"]["axes"]["batch"], 32);
    let m = &j["memory_bytes"];
    assert_eq!(m["parameters"], 385 * 4);
    assert_eq!(m["optimizer"], 385 * 8);
    // Activations: linear out (32x64) + bias out + gelu out + linear out (32x1) + bias out.
    assert_eq!(m["activations"], (32 * 64 * 3 + 32 * 2) * 4);
    assert_eq!(j["tree"]["children"][0]["kind"], "Affine");
    assert_eq!(
        j["tree"]["children"][0]["children"][0]["params"][0]["label"],
        "0.linear.weights"
    );
}

#[test]
fn set_overrides_are_typed_and_applied() {
    let j = plan_json(&[
        "recipes/tiny-transformer.toml",
        "--set",
        "model.input.axes.seq=128",
        "--set",
        "run.name=\"other\"",
    ]);
    assert_eq!(j["output"]["axes"]["seq"], 128);
    assert_eq!(j["run"]["name"], "other");
    assert_eq!(j["run"]["out_dir"], "runs/other");
    let (code, _, err) = pzt(&["plan", "recipes/mlp.toml", "--set", "run.seed=\"zero\""]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`seed` must be an integer, found a string") && err.contains("--set #1"),
        "{err}"
    );
    // A value that fails a check points at the --set argument that gave it.
    let (code, _, err) = pzt(&[
        "plan",
        "recipes/quickstart.toml",
        "--set",
        "data.eval_fraction=2.0",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("eval_fraction must be in [0, 1)") && err.contains("--> --set #1:1:"),
        "{err}"
    );
    let (code, _, err) = pzt(&[
        "plan",
        "recipes/quickstart.toml",
        "--set",
        "data.generator=\"adition\"",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("did you mean `addition`")
            && err.contains("expected one of: addition, copy, reverse\n"),
        "{err}"
    );
    // A value that is not TOML is the string it spells.
    let (code, out, err) = pzt(&["plan", "recipes/mlp.toml", "--set", "run.name=my-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("my-run"), "{out}");
    let (code, _, err) = pzt(&["plan", "recipes/mlp.toml", "--set", "train.steps=12abc"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid type: string \"12abc\""), "{err}");
    // Includes are read before --set: changing them is refused, not ignored.
    let (code, _, err) = pzt(&["plan", "recipes/mlp.toml", "--set", "include=[\"x.toml\"]"]);
    assert_eq!(code, 2);
    assert!(err.contains("--set cannot change `include`"), "{err}");
    // A table replaces the table (its other keys are gone), it does not merge.
    let (code, _, err) = pzt(&[
        "plan",
        "recipes/quickstart.toml",
        "--set",
        "model.input={ axes = { batch = 32 } }",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the model input is {batch: 32}"), "{err}");
    let (code, _, err) = pzt(&["plan", "recipes/mlp.toml", "--set", "run.name"]);
    assert_eq!(code, 2);
    assert!(err.contains("KEY=VALUE"), "{err}");
}

#[test]
fn select_command() {
    let cases = [
        ("Attention Linear", 6),
        ("Attention > input_to_query", 2),
        ("blocks.*.mlp", 2),
        ("blocks.1.attention", 1),
        ("Linear[0]", 1),
        ("Linear[-1]", 1),
        ("Linear", 2 * 9 + 2),
        ("blocks.**.down", 2),
        ("Nope", 0),
    ];
    for (sel, n) in cases {
        let (code, out, err) = pzt(&["select", "recipes/tiny-transformer.toml", sel]);
        assert_eq!(code, 0, "{sel}: {err}");
        let last = out.lines().last().unwrap_or("");
        assert_eq!(
            last,
            format!("{n} match{}", if n == 1 { "" } else { "es" }),
            "{sel}:\n{out}"
        );
    }
    let (_, out, _) = pzt(&["select", "recipes/tiny-transformer.toml", "Linear[-1]"]);
    assert!(out.starts_with("lm_head  Linear"), "{out}");
    let (_, out, _) = pzt(&[
        "select",
        "recipes/tiny-transformer.toml",
        "Attention > input_to_query",
    ]);
    assert!(
        out.contains("blocks.0.attention.delta.attention.input_to_query  Sequential"),
        "{out}"
    );
    let (code, _, err) = pzt(&["select", "recipes/tiny-transformer.toml", "Attention >"]);
    assert_eq!(code, 2);
    assert!(err.contains("bad selector") && err.contains("^"), "{err}");
}

#[test]
fn show_prints_the_tree() {
    let (code, out, _) = pzt(&["show", "recipes/tiny-transformer.toml", "--depth", "1"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("Sequential\n  embed: EmbeddingLookup"),
        "{out}"
    );
    assert!(out.contains("blocks: Sequential  {... 70 nodes}"), "{out}");
    assert!(!out.contains("\x1b["), "no colours when piped");
    let (_, full, _) = pzt(&["show", "recipes/tiny-transformer.toml"]);
    assert!(full.contains("input_to_query: Sequential"), "{full}");
    assert!(
        full.contains(
            "Linear({embedding: 64} -> {heads: 4, projection: 16})  [weights: f32[64, 4, 16]]"
        ),
        "{full}"
    );
    let (code, out, _) = pzt(&["show", "recipes/mlp.toml", "--json"]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["kind"], "Sequential");
    assert_eq!(j["children"][2]["path"], "2");
}

#[test]
fn builder_and_combinator_forms_show_the_same_kinds() {
    let (_, a, _) = pzt(&["show", "recipes/transformer.toml"]);
    for kind in [
        "EmbeddingLookup",
        "Residual",
        "RMSLayerNorm",
        "Attention",
        "ApplyRoPE",
        "ContractTogether",
        "ApplyCausalAttentionMask",
        "Softmax",
        "BranchAndMultiplyTogether",
        "EmbeddingDecode",
    ] {
        assert!(a.contains(kind), "{kind} missing:\n{a}");
    }
}

#[test]
fn patches_apply_in_order_and_share_parameters() {
    let (_, out, _) = pzt(&[
        "select",
        "recipes/tiny-transformer-softcap.toml",
        "TanhSoftCap",
    ]);
    assert!(out.ends_with("3 matches\n"), "{out}");
    let (_, out, _) = pzt(&[
        "select",
        "recipes/tiny-transformer-softcap.toml",
        "Attention > query_key_to_attn > *",
    ]);
    assert!(
        out.contains("query_key_to_attn.1  TanhSoftCap")
            && out.contains("query_key_to_attn.3  Softmax"),
        "{out}"
    );
    let (_, out, _) = pzt(&[
        "select",
        "recipes/tiny-transformer-softcap.toml",
        "lm_head > *",
    ]);
    assert_eq!(
        out,
        "lm_head.0  Linear\nlm_head.1  TanhSoftCap\n2 matches\n"
    );
    // Same parameters (labels, count) as the unpatched model, and the wrapped head keeps its
    // parameter object.
    let a = plan_json(&["recipes/tiny-transformer.toml"]);
    let b = plan_json(&["recipes/tiny-transformer-softcap.toml"]);
    assert_eq!(a["parameters"], b["parameters"]);
    let r = Recipe::load(Path::new("recipes/tiny-transformer-softcap.toml"), &[]).unwrap();
    let bld = Builder::new(0);
    let reg = pzt::builtin_registry();
    let mb = ModelBuilder::new(&bld, &reg);
    let before = mb.build(&r.model, &[], &["model".into()]).unwrap();
    let after = pzt::recipe::patch::apply_patches(before.clone(), &r.patches, &mb).unwrap();
    let p0 = before
        .child("lm_head")
        .unwrap()
        .param_entry("weights")
        .unwrap()
        .clone();
    let p1 = after
        .get(&["lm_head".into(), "0".into()])
        .unwrap()
        .param_entry("weights")
        .unwrap()
        .clone();
    match (p0, p1) {
        (pzt::params::ParamEntry::Bound(x), pzt::params::ParamEntry::Bound(y)) => {
            assert!(x.same(&y))
        }
        _ => panic!("unbound"),
    }
    for (x, y) in before.parameters().iter().zip(after.parameters()) {
        assert!(x.same(&y));
    }
}

#[test]
fn replace_insert_remove_patches() {
    let dir = std::env::temp_dir().join(format!("pzt-patch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("r.toml");
    std::fs::write(
        &f,
        r#"
[model]
builder = "mlp"
widths = [4, 8, 8, 2]
activation = "relu"
input = { axes = { batch = 3, features = 4 } }

[[patch]]
select = "Elementwise"
action = "replace"
with = { type = "Elementwise", fn = "tanh" }
expect_count = 2

[[patch]]
select = "Elementwise[0]"
action = "insert_before"
with = { type = "Dropout", rate = 0.1 }

[[patch]]
select = "5 > bias"
action = "remove"

[[patch]]
select = "3"
action = "replace"
with = { type = "Affine", input_axes = { hidden = 8 }, output_axes = { hidden = 16 } }
"#,
    )
    .unwrap();
    let (code, out, err) = pzt(&["show", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let kinds: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .collect();
    assert_eq!(
        kinds,
        [
            "  0: Affine",
            "  1: Dropout(rate 0.1)",
            "  2: Elementwise(tanh)",
            "  3: Affine",
            "  4: Elementwise(tanh)",
            "  5: Affine"
        ],
        "{out}"
    );
    assert!(
        out.contains("  5: Affine\n    linear: Linear")
            && !out.contains("    bias: AddBias({features: 2})"),
        "{out}"
    );
    // The replacement changed a width: the shape check catches the mismatch with layer 4.
    let (code, _, err) = pzt(&["plan", f.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("shape check failed at layer `5.linear`")
            && err.contains("size 8")
            && err.contains("size 16"),
        "{err}"
    );
}

#[test]
fn recipe_round_trips_through_toml() {
    for recipe in [
        "recipes/tiny-transformer.toml",
        "recipes/transformer.toml",
        "recipes/tiny-transformer-softcap.toml",
        "recipes/mlp.toml",
    ] {
        let r = Recipe::load(Path::new(recipe), &[]).unwrap();
        let tree = Plan::tree_only(&r, &pzt::builtin_registry()).unwrap();
        let text = pzt::tree::model_toml(&tree).unwrap();
        let dir = std::env::temp_dir().join(format!("pzt-rt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("back.toml");
        std::fs::write(&f, &text).unwrap();
        let r2 = Recipe::load(&f, &[]).unwrap();
        let back = Plan::tree_only(&r2, &pzt::builtin_registry()).unwrap();
        assert!(
            back.same_structure(&tree),
            "{recipe}: structure differs\n{text}"
        );
        let labels = |n: &pzt::tree::Node| {
            n.all_param_entries()
                .into_iter()
                .map(|(p, k, e)| (p, k, e.label().to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(&back), labels(&tree), "{recipe}");
        assert_eq!(
            select(&back).at_instances_of("Linear").count(),
            select(&tree).at_instances_of("Linear").count()
        );
    }
    // Tied embeddings stay tied: the decode node keeps the lookup's label.
    let r = Recipe::load(Path::new("recipes/transformer.toml"), &[]).unwrap();
    let tree = Plan::tree_only(&r, &pzt::builtin_registry()).unwrap();
    let text = pzt::tree::model_toml(&tree).unwrap();
    assert!(text.contains("embeddings = \"embed.embeddings\""), "{text}");
}

#[test]
fn golden_error_messages() {
    let bless = std::env::var_os("PZT_BLESS").is_some();
    let mut names: Vec<String> = std::fs::read_dir("tests/golden")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().map(|e| e == "toml").unwrap_or(false))
        .filter(|p| !p.to_string_lossy().ends_with("-b.toml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 15);
    let mut failures = vec![];
    for name in names {
        let (code, out, err) = pzt(&["plan", &name]);
        assert_eq!(code, 2, "{name}: expected exit 2\n{out}{err}");
        assert!(out.is_empty(), "{name}: wrote to stdout");
        assert!(
            !err.contains("panicked") && !err.contains("frame #"),
            "{name}: {err}"
        );
        let golden = name.replace(".toml", ".stderr");
        if bless {
            std::fs::write(&golden, &err).unwrap();
        } else {
            let want = std::fs::read_to_string(&golden).unwrap_or_default();
            if want != err {
                failures.push(format!("--- {golden}\n{want}+++ actual\n{err}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (PZT_BLESS=1 to update):\n{}",
        failures.join("\n")
    );
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Gate {
    axes: pzt::layers::Axes,
}

impl pzt::tree::Layer for Gate {
    pzt::layer_common!("Gate");
    fn param_specs(&self) -> Vec<pzt::tree::ParamSpec> {
        vec![pzt::tree::ParamSpec {
            name: "gate".into(),
            shape: self.axes.values().copied().collect(),
            init: pzt::params::init::Initializer::Ones,
            fan_in: 1,
        }]
    }
    fn forward(
        &self,
        n: &pzt::tree::Node,
        x: pzt::tree::Value,
        _s: &pzt::tree::SideInputs,
    ) -> pzt::Result<pzt::tree::Value> {
        let names: Vec<&str> = self.axes.keys().map(|s| s.as_str()).collect();
        let g = pzt::named::NamedTensor::wrap(n.param("gate")?, &names)?;
        Ok(x.into_tensor()?.mul(&g)?.into())
    }
}

#[test]
fn custom_kinds_registered_from_rust_work_in_recipes() {
    let mut reg = pzt::builtin_registry();
    reg.register_layer("Gate", pzt::tree::registry::serde_factory::<Gate>("Gate"));
    let dir = std::env::temp_dir().join(format!("pzt-custom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("custom.toml");
    std::fs::write(
        &f,
        r#"
[model]
type = "Sequential"
input = { axes = { batch = 2, features = 3 } }
layers = [
  { type = "Gate", axes = { features = 3 } },
  { type = "Linear", input_axes = { features = 3 }, output_axes = { out = 2 } },
]
"#,
    )
    .unwrap();
    let plan = Plan::shapes_only(Recipe::load(&f, &[]).unwrap(), &reg).unwrap();
    assert_eq!(plan.counts.total, 3 + 6);
    assert_eq!(
        plan.tree.children()[0].1.param_entries()[0].1.label(),
        "0.gate"
    );
    std::fs::write(
        &f,
        "[model]\ntype = \"Gate\"\naxes = { features = 3 }\nbias = 1\n",
    )
    .unwrap();
    let e = Recipe::load(&f, &[])
        .and_then(|r| Plan::shapes_only(r, &reg))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown key `bias` in Gate") && e.contains("custom.toml:4:1"),
        "{e}"
    );
}
