//! Model rewiring (Penzai's `model_rewiring`): `LinearizeAndAdjust` against finite differences,
//! and `KnockOutAttentionHeads` against zeroing the head's output weights.
use crate::common::tmpdir;
use crate::common::{fixture, run_pzt};
use pzt::layers::misc::{Identity, Rescale};
use pzt::layers::toolshed::LinearizeAndAdjust;
use pzt::prelude::*;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn mlp64(seed: u64) -> Node {
    let b = Builder::new(seed).dtype(Kind::Double);
    pzt::models::mlp::mlp(
        &b.scope("f"),
        "features",
        "hidden",
        &[3, 8, 2],
        Activation::Tanh,
    )
    .unwrap()
}

fn x64(seed: u64) -> NamedTensor {
    let t = pzt::backend::seeded_random(
        seed,
        pzt::backend::Distribution::Normal,
        &[4, 3],
        Kind::Double,
        Device::Cpu,
    )
    .unwrap();
    NamedTensor::wrap(t, &["batch", "features"]).unwrap()
}

fn run(n: &Node, x: &NamedTensor) -> Tensor {
    n.forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap()
        .tensor()
        .shallow_clone()
}

fn gap(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn linearize_equals_the_target_when_both_points_agree() {
    let f = mlp64(1);
    let x = x64(2);
    let l = LinearizeAndAdjust::build(Node::new(Identity {}), Node::new(Identity {}), f.clone());
    assert_eq!(gap(&run(&l, &x), &run(&f, &x)), 0.0);
}

#[test]
fn linearize_matches_finite_differences() {
    let f = mlp64(3);
    let x = x64(4);
    // p = 0.5 x, e = x: f(p) + J_f(p) (x - p).
    let l = LinearizeAndAdjust::build(
        Node::new(Rescale { by: 0.5 }),
        Node::new(Identity {}),
        f.clone(),
    );
    let out = run(&l, &x);
    let p = x.mul_scalar(0.5).unwrap();
    let v = x.sub(&p).unwrap();
    let eps = 1e-5;
    let plus = run(&f, &p.add(&v.mul_scalar(eps).unwrap()).unwrap());
    let minus = run(&f, &p.sub(&v.mul_scalar(eps).unwrap()).unwrap());
    let fd = run(&f, &p) + (plus - minus) / (2.0 * eps);
    assert!(gap(&out, &fd) < 1e-8, "{}", gap(&out, &fd));
    // tanh is not linear: the approximation is not the function.
    assert!(gap(&out, &run(&f, &x)) > 1e-3);
    // A linear target is its own linearization, around any point.
    let b = Builder::new(5).dtype(Kind::Double);
    let lin = pzt::layers::linear::Linear::new(
        [("features".to_string(), 3)].into_iter().collect(),
        [("out".to_string(), 2)].into_iter().collect(),
    )
    .build(&b.scope("lin"), None)
    .unwrap();
    let l = LinearizeAndAdjust::build(
        Node::new(Rescale { by: -3.0 }),
        Node::new(Identity {}),
        lin.clone(),
    );
    assert!(gap(&run(&l, &x), &run(&lin, &x)) < 1e-12);
}

#[test]
fn linearize_trains_its_parameters() {
    let f = {
        let b = Builder::new(6);
        pzt::models::mlp::mlp(
            &b.scope("f"),
            "features",
            "hidden",
            &[3, 8, 2],
            Activation::Tanh,
        )
        .unwrap()
    };
    let l = LinearizeAndAdjust::build(
        Node::new(Rescale { by: 0.5 }),
        Node::new(Identity {}),
        f.clone(),
    );
    let x =
        NamedTensor::wrap(x64(7).tensor().to_kind(Kind::Float), &["batch", "features"]).unwrap();
    let y = run(&l, &x);
    y.sum(Kind::Float).backward();
    for p in f.parameters() {
        let g = p.grad().expect("a gradient for every parameter");
        assert!(
            g.isfinite().all().int64_value(&[]) == 1
                && g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "{}",
            p.label()
        );
    }
}

fn logits(args: &[&str], out: &Path) -> Tensor {
    let mut a = args.to_vec();
    a.extend(["--out", out.to_str().unwrap()]);
    let (code, _, err) = run_pzt(&a);
    assert_eq!(code, 0, "{a:?}: {err}");
    Tensor::read_safetensors(out).unwrap().remove(0).1
}

#[test]
fn linearized_attention_in_a_pretrained_model() {
    // Wrapping a whole attention block (fused kernels and all) with identical points leaves
    // the logits as they were; linearizing around another point changes them (not around a
    // scaled input: an RMS-normalized residual block is linear along its input's direction).
    let d = tmpdir("rewiring", "attn");
    let out = d.join("l.safetensors");
    let hf = fixture("hf/llama-gqa");
    let toks = "5 17 33 2 90 41";
    let plain = logits(&["logits", &hf, "--tokens", toks], &out);
    let same = r#"patch=[{select = "blocks.0.attention", action = "wrap", with = {type = "LinearizeAndAdjust", linearize_around = {type = "Identity"}, evaluate_at = {type = "Identity"}}}]"#;
    let wrapped = logits(&["logits", &hf, "--tokens", toks, "--set", same], &out);
    assert!(gap(&plain, &wrapped) < 1e-4, "{}", gap(&plain, &wrapped));
    let around = r#"patch=[{select = "blocks.0.attention", action = "wrap", with = {type = "LinearizeAndAdjust", linearize_around = {type = "Elementwise", fn = "tanh"}, evaluate_at = {type = "Identity"}}}]"#;
    let moved = logits(&["logits", &hf, "--tokens", toks, "--set", around], &out);
    assert!(gap(&plain, &moved) > 1e-4);
    let (code, out, err) = run_pzt(&["show", &hf, "--set", around, "--depth", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("LinearizeAndAdjust"), "{out}");
}

fn quickstart() -> Node {
    let r = pzt::recipe::Recipe::load(Path::new(&fixture("../../recipes/quickstart.toml")), &[])
        .unwrap();
    let b = Builder::new(0).dtype(r.param_dtype);
    pzt::recipe::plan::Plan::build(r, &pzt::builtin_registry(), &b)
        .unwrap()
        .tree
}

fn knockout(mask: &str) -> Node {
    let t: toml::Table = toml::from_str(&format!(
        "type = \"KnockOutAttentionHeads\"\nhead_mask = {mask}"
    ))
    .unwrap();
    let reg = pzt::builtin_registry();
    let layer = reg.make_layer("KnockOutAttentionHeads", &{
        let mut c = t.clone();
        c.remove("type");
        c
    });
    Node::from_arc(layer.unwrap())
}

#[test]
fn knocking_out_a_head_equals_zeroing_its_output_weights() {
    let tree = quickstart();
    let x = NamedTensor::wrap(
        Tensor::from_slice(&[3i64, 7, 43, 5, 8, 61, 2, 9]).reshape([1, 8]),
        &["batch", "seq"],
    )
    .unwrap();
    let want = run(&tree, &x);
    let softmax = select(&tree)
        .at_path("blocks.0")
        .at_instances_of("Attention")
        .at_path("query_key_to_attn")
        .at_instances_of("Softmax");
    assert_eq!(softmax.count(), 1);
    let keep_all = softmax
        .insert_after(&knockout("{ axes = [\"heads\"], values = [1, 1, 1, 1] }"))
        .unwrap();
    // (The extra layer turns off the fused attention kernel: other rounding.)
    assert!(
        gap(&run(&keep_all, &x), &want) < 1e-4,
        "{}",
        gap(&run(&keep_all, &x), &want)
    );
    let knocked = softmax
        .insert_after(&knockout("{ axes = [\"heads\"], values = [1, 0, 1, 1] }"))
        .unwrap();
    let got = run(&knocked, &x);
    assert!(gap(&got, &want) > 1e-4, "head 1 mattered");
    // The same model with head 1's slice of blocks.0's attention output projection zeroed.
    let label = "blocks.0.attention.delta.attention.output.linear.weights";
    let (slots, params) = tree.unbind_params().unwrap();
    let params: Vec<Parameter> = params
        .into_iter()
        .map(|p| {
            if p.label() != label {
                return p;
            }
            let w = p.value().copy(); // [heads, projection, embedding]
            let _ = w.get(1).fill_(0.0);
            Parameter::new(label, w)
        })
        .collect();
    let zeroed = slots.bind(&params).unwrap();
    assert!(
        gap(&run(&zeroed, &x), &got) < 1e-5,
        "{}",
        gap(&run(&zeroed, &x), &got)
    );
}

#[test]
fn knockout_refuses_bad_masks() {
    let reg = pzt::builtin_registry();
    for (mask, msg) in [
        ("{ axes = [\"heads\"], values = [[1, 0], [1]] }", "ragged"),
        (
            "{ axes = [\"heads\", \"q\"], values = [1, 0] }",
            "nested 1 deep",
        ),
        (
            "{ axes = [\"heads\", \"heads\"], values = [[1], [0]] }",
            "twice",
        ),
        (
            "{ axes = [\"heads\"], values = [1, \"x\"] }",
            "finite numbers",
        ),
    ] {
        let t: toml::Table = toml::from_str(&format!("head_mask = {mask}")).unwrap();
        let e = reg
            .make_layer("KnockOutAttentionHeads", &t)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains(msg), "{mask}: {e}");
    }
    // A good mask plans (shapes on the meta device); a mask axis the weights lack, through a
    // recipe patch: exit 2 naming the axis.
    let good = r#"patch=[{select = "blocks.0 Attention > query_key_to_attn > Softmax", action = "insert_after", with = {type = "KnockOutAttentionHeads", head_mask = {axes = ["heads"], values = [1, 0, 1, 1]}}}]"#;
    let (code, out, err) = run_pzt(&[
        "plan",
        &fixture("../../recipes/quickstart.toml"),
        "--set",
        good,
        "--depth",
        "9",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("KnockOutAttentionHeads([\"heads\"]: 3 of 4 kept)"),
        "{out}"
    );
    let patch = r#"patch=[{select = "Attention > query_key_to_attn > Softmax", action = "insert_after", with = {type = "KnockOutAttentionHeads", head_mask = {axes = ["kv_heads"], values = [1, 0]}}}]"#;
    let (code, _, err) = run_pzt(&[
        "plan",
        &fixture("../../recipes/quickstart.toml"),
        "--set",
        patch,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("axis `kv_heads` of size 2"), "{err}");
}
