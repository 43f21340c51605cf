//! Attention: the fused scaled_dot_product_attention path equals the explicit composition,
//! both equal a direct tch computation, and gradients flow through the tree.
use crate::common::*;
use pzt::layers::misc::TanhSoftCap;
use pzt::prelude::*;
use tch::{Kind, Tensor};

fn unfused(model: &Node) -> Node {
    select(model)
        .at_instances_of("Attention")
        .apply(
            |_, n| Ok(Node::new(Attention { fused: false }).with_children(n.children().to_vec())),
        )
        .unwrap()
}

fn run(model: &Node, x: &NamedTensor, side: &SideInputs) -> NamedTensor {
    model
        .forward(x.clone(), side)
        .unwrap()
        .into_tensor()
        .unwrap()
}

fn check_fused_equals_explicit(cfg: SelfAttentionConfig, side: SideInputs, seed: u64) {
    let b = Builder::new(seed);
    let model = cfg.build(&b.scope("attn")).unwrap();
    let x = named(
        &[2, 7, cfg.d_model],
        &["batch", "seq", "embedding"],
        seed + 100,
    );
    let attn = select(&model).at_instances_of("Attention").get()[0]
        .1
        .clone();
    assert!(Attention::is_fusable(&attn).unwrap());
    let before = pzt::layers::attention::fused_call_count();
    let fused = run(&model, &x, &side);
    assert!(
        pzt::layers::attention::fused_call_count() > before,
        "the fused kernel did not run"
    );
    let explicit = run(&unfused(&model), &x, &side);
    assert_eq!(fused.named_shape().len(), 3);
    assert_close(&explicit, &fused, 1e-5);
}

#[test]
fn fused_equals_explicit_mha_causal() {
    check_fused_equals_explicit(SelfAttentionConfig::new(16, 4, 4), SideInputs::new(), 1);
}

#[test]
fn fused_equals_explicit_gqa_and_mqa() {
    let mut c = SelfAttentionConfig::new(16, 4, 4);
    c.num_kv_heads = 2;
    check_fused_equals_explicit(c.clone(), SideInputs::new(), 2);
    c.num_kv_heads = 1;
    check_fused_equals_explicit(c, SideInputs::new(), 3);
}

#[test]
fn fused_equals_explicit_sliding_window_no_mask_and_positions() {
    let mut c = SelfAttentionConfig::new(16, 4, 4);
    c.mask = AttentionMask::SlidingWindow(3);
    c.num_kv_heads = 2;
    check_fused_equals_explicit(c.clone(), SideInputs::new(), 4);
    c.mask = AttentionMask::None;
    check_fused_equals_explicit(c.clone(), SideInputs::new(), 5);
    c.mask = AttentionMask::Causal;
    let pos = NamedTensor::wrap(
        Tensor::arange_start(5, 12, (Kind::Int64, tch::Device::Cpu)),
        &["seq"],
    )
    .unwrap();
    check_fused_equals_explicit(c, SideInputs::new().with_tensor("token_positions", pos), 6);
}

#[test]
fn attention_matches_direct_computation() {
    let cfg = {
        let mut c = SelfAttentionConfig::new(8, 2, 4);
        c.rope_wavelength = None;
        c
    };
    let b = Builder::new(7);
    let model = cfg.build(&b.scope("attn")).unwrap();
    let x = named(&[5, 8], &["seq", "embedding"], 8);
    let p = |path: &str| {
        model
            .get(&path.split('.').map(String::from).collect::<Vec<_>>())
            .unwrap()
            .param("weights")
            .unwrap()
    };
    let wq = p("attention.input_to_query.linear").reshape([8, 8]);
    let wk = p("attention.input_to_key.linear").reshape([8, 8]);
    let wv = p("attention.input_to_value.linear").reshape([8, 8]);
    let wo = p("output.linear").reshape([8, 8]);
    let t = x.tensor();
    let heads = |m: Tensor| m.reshape([5, 2, 4]).permute([1, 0, 2]); // [h, s, d]
    let (q, k, v) = (
        heads(t.matmul(&wq)),
        heads(t.matmul(&wk)),
        heads(t.matmul(&wv)),
    );
    let scores = q.matmul(&k.transpose(1, 2)) / 2.0;
    let causal = Tensor::ones([5, 5], (Kind::Bool, tch::Device::Cpu)).tril(0);
    let scores = scores.masked_fill(&causal.logical_not(), f64::NEG_INFINITY);
    let attn = scores.softmax(-1, Kind::Float).matmul(&v); // [h, s, d]
    let out = attn.permute([1, 0, 2]).reshape([5, 8]).matmul(&wo);
    let expect = NamedTensor::wrap(out, &["seq", "embedding"]).unwrap();
    assert_close(&expect, &run(&model, &x, &SideInputs::new()), 1e-5);
    assert_close(
        &expect,
        &run(&unfused(&model), &x, &SideInputs::new()),
        1e-5,
    );
}

#[test]
fn non_standard_compositions_fall_back_to_explicit() {
    // Soft-capping the logits (Gemma 2) is not expressible in the fused kernel: inserting it
    // must change the result (so the explicit path ran).
    let b = Builder::new(9);
    let model = SelfAttentionConfig::new(16, 4, 4)
        .build(&b.scope("attn"))
        .unwrap();
    let capped = select(&model)
        .at_instances_of("Attention")
        .at_path("query_key_to_attn.logits")
        .insert_after(&Node::new(TanhSoftCap { cap: 0.01 }))
        .unwrap();
    let x = named(&[7, 16], &["seq", "embedding"], 10);
    let attn = select(&capped).at_instances_of("Attention").get()[0]
        .1
        .clone();
    assert!(!Attention::is_fusable(&attn).unwrap());
    let a = run(&model, &x, &SideInputs::new());
    let c = run(&capped, &x, &SideInputs::new());
    assert!(max_abs_diff(a.tensor(), c.tensor()) > 1e-4);
    assert_close(&c, &run(&unfused(&capped), &x, &SideInputs::new()), 1e-6);
}

#[test]
fn gradients_flow_through_the_tree() {
    let b = Builder::new(11);
    let model = SelfAttentionConfig::new(8, 2, 4)
        .build(&b.scope("attn"))
        .unwrap();
    let x = named(&[5, 8], &["seq", "embedding"], 12);
    for m in [model.clone(), unfused(&model)] {
        for p in m.parameters() {
            p.value().zero_grad();
        }
        let y = run(&m, &x, &SideInputs::new());
        y.tensor().square().sum(Kind::Float).backward();
        let ps = m.parameters();
        assert_eq!(ps.len(), 4);
        for p in &ps {
            let g = p
                .grad()
                .unwrap_or_else(|| panic!("no grad for {}", p.label()));
            assert!(
                g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "zero grad for {}",
                p.label()
            );
        }
    }
    // Fused and explicit gradients agree.
    let grads = |m: &Node| -> Vec<Tensor> {
        for p in m.parameters() {
            p.value().zero_grad();
        }
        run(m, &x, &SideInputs::new())
            .tensor()
            .square()
            .sum(Kind::Float)
            .backward();
        m.parameters()
            .iter()
            .map(|p| p.grad().unwrap().copy())
            .collect()
    };
    let g1 = grads(&model);
    let g2 = grads(&unfused(&model));
    for (a, b) in g1.iter().zip(&g2) {
        assert!(max_abs_diff(a, b) < 1e-4);
    }
    // A gradient checked against finite differences through the whole tree.
    let p = &model.parameters()[0];
    let loss = |m: &Node| {
        run(m, &x, &SideInputs::new())
            .tensor()
            .square()
            .sum(Kind::Double)
            .double_value(&[])
    };
    let base = p.value().detach().copy();
    let eps = 1e-3;
    let plus = base.copy();
    let _ = plus
        .get(0)
        .get(0)
        .get(0)
        .fill_(base.get(0).get(0).get(0).double_value(&[]) + eps);
    p.set_value(plus);
    let lp = loss(&model);
    let minus = base.copy();
    let _ = minus
        .get(0)
        .get(0)
        .get(0)
        .fill_(base.get(0).get(0).get(0).double_value(&[]) - eps);
    p.set_value(minus);
    let lm = loss(&model);
    p.set_value(base);
    let numeric = (lp - lm) / (2.0 * eps);
    let analytic = g1[0].get(0).get(0).get(0).double_value(&[]);
    assert!(
        (numeric - analytic).abs() < 1e-2 * (1.0 + analytic.abs()),
        "{numeric} vs {analytic}"
    );
}
