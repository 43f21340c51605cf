//! Each layer's numbers against a direct tch computation.
use crate::common::*;
use pzt::layers::embedding::EmbeddingTable;
use pzt::layers::linear::{affine, AddBias, Linear};
use pzt::layers::masks::*;
use pzt::layers::misc::*;
use pzt::layers::norms::{layer_norm, rms_layer_norm, RMSStandardize, Standardize};
use pzt::layers::rope::{ApplyRoPE, RopeScaling};
use pzt::prelude::*;
use tch::{Kind, Tensor};

fn run(node: &Node, x: NamedTensor) -> NamedTensor {
    node.forward(x, &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap()
}

#[test]
fn linear_matches_matmul() {
    let b = Builder::new(1);
    let lin = Linear::new(axes(&[("embedding", 4)]), axes(&[("hidden", 5)]))
        .build(&b.scope("l"), None)
        .unwrap();
    let x = named(&[2, 3, 4], &["batch", "seq", "embedding"], 2);
    let y = run(&lin, x.clone());
    let w = lin.param("weights").unwrap();
    assert_eq!(w.size(), vec![4, 5]);
    let expect = NamedTensor::wrap(x.tensor().matmul(&w), &["batch", "seq", "hidden"]).unwrap();
    assert_close(&expect, &y, 1e-5);
    // Same name in and out (contracted first).
    let sq = Linear::new(axes(&[("embedding", 4)]), axes(&[("embedding", 4)]))
        .build(&b.scope("sq"), None)
        .unwrap();
    let y = run(&sq, x.clone());
    let expect = NamedTensor::wrap(
        x.tensor().matmul(&sq.param("weights").unwrap()),
        &["batch", "seq", "embedding"],
    )
    .unwrap();
    assert_close(&expect, &y, 1e-5);
}

#[test]
fn linear_multi_axis_and_parallel() {
    let b = Builder::new(3);
    let lin = Linear::new(
        axes(&[("embedding", 6)]),
        axes(&[("heads", 2), ("projection", 3)]),
    )
    .build(&b.scope("q"), None)
    .unwrap();
    let x = named(&[5, 6], &["seq", "embedding"], 4);
    let y = run(&lin, x.clone());
    let w = lin.param("weights").unwrap(); // [6, 2, 3]
    let expect = x.tensor().matmul(&w.reshape([6, 6])).reshape([5, 2, 3]);
    assert_close(
        &NamedTensor::wrap(expect, &["seq", "heads", "projection"]).unwrap(),
        &y,
        1e-5,
    );
    // Parallel axes: an elementwise scale.
    let scale = Linear {
        input_axes: Axes::new(),
        output_axes: Axes::new(),
        parallel_axes: axes(&[("embedding", 6)]),
        init: None,
    }
    .build(&b.scope("s"), None)
    .unwrap();
    let y = run(&scale, x.clone());
    let expect = x.tensor() * scale.param("weights").unwrap();
    assert_close(
        &NamedTensor::wrap(expect, &["seq", "embedding"]).unwrap(),
        &y,
        1e-6,
    );
    // Parallel + contraction: per-head matrices.
    let ph = Linear {
        input_axes: axes(&[("projection", 3)]),
        output_axes: axes(&[("out", 4)]),
        parallel_axes: axes(&[("heads", 2)]),
        init: None,
    }
    .build(&b.scope("ph"), None)
    .unwrap();
    let z = named(&[5, 2, 3], &["seq", "heads", "projection"], 5);
    let y = run(&ph, z.clone());
    let w = ph.param("weights").unwrap(); // [3, 4, 2]
    let expect = Tensor::einsum("shp,pOh->shO", &[z.tensor(), &w], None::<&[i64]>);
    assert_close(
        &NamedTensor::wrap(expect, &["seq", "heads", "out"]).unwrap(),
        &y,
        1e-5,
    );
}

#[test]
fn linear_shape_errors_name_layer_path_axis_and_sizes() {
    let b = Builder::new(1);
    let lin = Linear::new(axes(&[("embedding", 4)]), axes(&[("hidden", 5)]))
        .build(&b.scope("l"), None)
        .unwrap();
    let model = Sequential::named(vec![
        ("first".into(), Node::new(Identity {})),
        ("proj".into(), lin),
    ]);
    let bad = named(&[2, 3], &["batch", "embedding"], 1);
    let e = model.forward(bad, &SideInputs::new()).unwrap_err();
    assert_eq!(e.layer_path().as_deref(), Some("proj"));
    let msg = e.to_string();
    assert!(
        msg.contains("`embedding`") && msg.contains("size 4") && msg.contains("size 3"),
        "{msg}"
    );
    let missing = named(&[2, 4], &["batch", "features"], 1);
    let msg = model
        .forward(missing, &SideInputs::new())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("lacks the input axis `embedding`"), "{msg}");
}

#[test]
fn add_bias_and_affine() {
    let b = Builder::new(5);
    let bias = AddBias {
        axes: axes(&[("hidden", 3)]),
    }
    .build(&b.scope("b"))
    .unwrap();
    if let ParamEntry::Bound(p) = bias.param_entry("bias").unwrap() {
        p.set_value(Tensor::from_slice(&[1f32, 2., 3.]));
    }
    let x = named(&[2, 3], &["batch", "hidden"], 6);
    let y = run(&bias, x.clone());
    assert_close(
        &NamedTensor::wrap(
            x.tensor() + Tensor::from_slice(&[1f32, 2., 3.]),
            &["batch", "hidden"],
        )
        .unwrap(),
        &y,
        1e-6,
    );
    let aff = affine(&b.scope("a"), axes(&[("hidden", 3)]), axes(&[("out", 2)])).unwrap();
    assert_eq!(aff.kind(), "Affine");
    let w = aff.child("linear").unwrap().param("weights").unwrap();
    let bb = aff.child("bias").unwrap().param("bias").unwrap();
    let y = run(&aff, x.clone());
    assert_close(
        &NamedTensor::wrap(x.tensor().matmul(&w) + bb, &["batch", "out"]).unwrap(),
        &y,
        1e-5,
    );
    assert_eq!(
        aff.child("linear")
            .unwrap()
            .param_entry("weights")
            .unwrap()
            .label(),
        "a.linear.weights"
    );
}

#[test]
fn elementwise_functions() {
    let x = named(&[3, 4], &["a", "b"], 7);
    let t = x.tensor();
    let cases: Vec<(Activation, Tensor)> = vec![
        (Activation::Relu, t.relu()),
        (Activation::Gelu, t.gelu("none")),
        (Activation::GeluTanh, t.gelu("tanh")),
        (Activation::Silu, t.silu()),
        (Activation::Tanh, t.tanh()),
        (Activation::Sigmoid, t.sigmoid()),
        (Activation::Softplus, t.softplus()),
        (Activation::Exp, t.exp()),
        (Activation::Square, t.square()),
        (Activation::Abs, t.abs()),
        (Activation::Neg, -t),
    ];
    assert_eq!(cases.len(), Activation::ALL.len());
    for (f, expect) in cases {
        let y = run(&Node::new(Elementwise { function: f }), x.clone());
        assert_close(&NamedTensor::wrap(expect, &["a", "b"]).unwrap(), &y, 1e-6);
    }
    // gelu (exact) and gelu_tanh differ.
    let a = run(
        &Node::new(Elementwise {
            function: Activation::Gelu,
        }),
        x.clone(),
    );
    let b = run(
        &Node::new(Elementwise {
            function: Activation::GeluTanh,
        }),
        x.clone(),
    );
    assert!(max_abs_diff(a.tensor(), b.tensor()) > 1e-6);
}

#[test]
fn softmax_softcap_rescale_rename_cast_identity() {
    let x = named(&[3, 4], &["a", "b"], 8);
    let y = run(
        &Node::new(Softmax {
            axes: vec!["b".into()],
        }),
        x.clone(),
    );
    assert_close(
        &NamedTensor::wrap(x.tensor().softmax(1, Kind::Float), &["a", "b"]).unwrap(),
        &y,
        1e-6,
    );
    let y = run(
        &Node::new(TanhSoftCap { cap: 0.5 }),
        x.mul_scalar(10.0).unwrap(),
    );
    assert_close(
        &NamedTensor::wrap((x.tensor() * 20.0).tanh() * 0.5, &["a", "b"]).unwrap(),
        &y,
        1e-6,
    );
    let y = run(&Node::new(Rescale { by: 3.0 }), x.clone());
    assert_close(&x.mul_scalar(3.0).unwrap(), &y, 0.0);
    let r = Node::new(RenameAxes {
        rename: [("a".to_string(), "c".to_string())].into_iter().collect(),
    });
    assert_eq!(run(&r, x.clone()).names(), &["c", "b"]);
    let c = run(
        &Node::new(CastToDType {
            dtype: "bfloat16".into(),
        }),
        x.clone(),
    );
    assert_eq!(c.kind(), Kind::BFloat16);
    assert!(Node::new(CastToDType {
        dtype: "int3".into()
    })
    .forward(x.clone(), &SideInputs::new())
    .is_err());
    assert_close(&run(&Node::new(Identity {}), x.clone()), &x, 0.0);
}

#[test]
fn norms_match_direct_computation() {
    let x = named(&[2, 3, 8], &["batch", "seq", "embedding"], 9);
    let t = x.tensor();
    let y = run(
        &Node::new(Standardize {
            axes: vec!["embedding".into()],
            epsilon: 1e-5,
        }),
        x.clone(),
    );
    let expect = t.layer_norm(
        [8i64].as_slice(),
        None::<&Tensor>,
        None::<&Tensor>,
        1e-5,
        false,
    );
    assert_close(
        &NamedTensor::wrap(expect, &["batch", "seq", "embedding"]).unwrap(),
        &y,
        1e-5,
    );
    let y = run(
        &Node::new(RMSStandardize {
            axes: vec!["embedding".into()],
            epsilon: 1e-6,
        }),
        x.clone(),
    );
    let expect = t * (t.square().mean_dim([-1i64].as_slice(), true, None) + 1e-6).rsqrt();
    assert_close(
        &NamedTensor::wrap(expect, &["batch", "seq", "embedding"]).unwrap(),
        &y,
        1e-5,
    );

    let b = Builder::new(3);
    let ln = layer_norm(&b.scope("ln"), axes(&[("embedding", 8)]), 1e-5).unwrap();
    assert_eq!(ln.kind(), "LayerNorm");
    let w = randn(&[8], 10);
    let bb = randn(&[8], 11);
    for (path, v) in [("scale", &w), ("bias", &bb)] {
        for (_, p) in ln.child(path).unwrap().param_entries() {
            if let ParamEntry::Bound(p) = p {
                p.set_value(v.shallow_clone());
            }
        }
    }
    let y = run(&ln, x.clone());
    let expect = t.layer_norm([8i64].as_slice(), Some(&w), Some(&bb), 1e-5, false);
    assert_close(
        &NamedTensor::wrap(expect, &["batch", "seq", "embedding"]).unwrap(),
        &y,
        1e-5,
    );
    let rms = rms_layer_norm(&b.scope("rms"), axes(&[("embedding", 8)]), 1e-6).unwrap();
    if let ParamEntry::Bound(p) = rms.child("scale").unwrap().param_entry("weights").unwrap() {
        p.set_value(w.shallow_clone());
    }
    let y = run(&rms, x.clone());
    let expect = t * (t.square().mean_dim([-1i64].as_slice(), true, None) + 1e-6).rsqrt() * &w;
    assert_close(
        &NamedTensor::wrap(expect, &["batch", "seq", "embedding"]).unwrap(),
        &y,
        1e-5,
    );
}

#[test]
fn embedding_lookup_and_tied_decode() {
    let b = Builder::new(4);
    let table = EmbeddingTable::build(
        &b.scope("embed"),
        "vocab",
        10,
        axes(&[("embedding", 6)]),
        None,
    )
    .unwrap();
    let lookup = table.lookup();
    let decode = table.decode();
    let ids = NamedTensor::wrap(
        Tensor::from_slice(&[1i64, 7, 3, 3, 0, 9]).reshape([2, 3]),
        &["batch", "seq"],
    )
    .unwrap();
    let e = run(&lookup, ids.clone());
    let w = lookup.param("embeddings").unwrap();
    let expect = Tensor::embedding(&w, ids.tensor(), -1, false, false);
    assert_close(
        &NamedTensor::wrap(expect, &["batch", "seq", "embedding"]).unwrap(),
        &e,
        0.0,
    );
    let logits = run(&decode, e.clone());
    let expect = e.tensor().matmul(&w.tr());
    assert_close(
        &NamedTensor::wrap(expect, &["batch", "seq", "vocab"]).unwrap(),
        &logits,
        1e-5,
    );
    // Both nodes hold the same parameter.
    match (
        lookup.param_entry("embeddings").unwrap(),
        decode.param_entry("embeddings").unwrap(),
    ) {
        (ParamEntry::Bound(a), ParamEntry::Bound(b)) => assert!(a.same(b)),
        _ => panic!("unbound"),
    }
    assert!(lookup
        .forward(e, &SideInputs::new())
        .unwrap_err()
        .to_string()
        .contains("integer"));
}

fn rope_reference(x: &Tensor, pos: &Tensor, d: i64, inv: &Tensor) -> Tensor {
    // x: [seq, heads, e]; HF rotate-half on the first d dims.
    let freqs = pos.to_kind(Kind::Float).unsqueeze(-1) * inv.unsqueeze(0); // [seq, d/2]
    let emb = Tensor::cat(&[&freqs, &freqs], -1);
    let (cos, sin) = (emb.cos().unsqueeze(1), emb.sin().unsqueeze(1));
    let e = x.size()[2];
    let xr = x.narrow(-1, 0, d);
    let x1 = xr.narrow(-1, 0, d / 2);
    let x2 = xr.narrow(-1, d / 2, d / 2);
    let rot = Tensor::cat(&[&(-x2), &x1], -1);
    let y = &xr * cos + rot * sin;
    if d < e {
        Tensor::cat(&[&y, &x.narrow(-1, d, e - d)], -1)
    } else {
        y
    }
}

#[test]
fn rope_matches_rotate_half_reference() {
    let x = named(&[5, 2, 8], &["seq", "heads", "projection"], 12);
    let rope = ApplyRoPE::new("projection");
    let inv = Tensor::from(1.0f32)
        / Tensor::from(10000f32)
            .pow(&(Tensor::arange_start_step(0, 8, 2, (Kind::Float, tch::Device::Cpu)) / 8.0));
    let y = run(&Node::new(rope.clone()), x.clone());
    let pos = Tensor::arange(5, (Kind::Int64, tch::Device::Cpu));
    let expect = rope_reference(x.tensor(), &pos, 8, &inv);
    assert_close(
        &NamedTensor::wrap(expect, &["seq", "heads", "projection"]).unwrap(),
        &y,
        1e-5,
    );
    // Explicit positions from the side input.
    let p = Tensor::from_slice(&[3i64, 4, 5, 6, 7]);
    let side = SideInputs::new().with_tensor(
        "token_positions",
        NamedTensor::wrap(p.shallow_clone(), &["seq"]).unwrap(),
    );
    let y = Node::new(rope.clone())
        .forward(x.clone(), &side)
        .unwrap()
        .into_tensor()
        .unwrap();
    let expect = rope_reference(x.tensor(), &p, 8, &inv);
    assert_close(
        &NamedTensor::wrap(expect, &["seq", "heads", "projection"]).unwrap(),
        &y,
        1e-5,
    );
    // Partial rotary: only the first 4 dims rotate.
    let mut partial = rope.clone();
    partial.rotary_dims = Some(4);
    partial.max_wavelength = 500.0;
    let inv4 = Tensor::from(1.0f32)
        / Tensor::from(500f32)
            .pow(&(Tensor::arange_start_step(0, 4, 2, (Kind::Float, tch::Device::Cpu)) / 4.0));
    let y = run(&Node::new(partial), x.clone());
    let expect = rope_reference(x.tensor(), &pos, 4, &inv4);
    assert_close(
        &NamedTensor::wrap(expect, &["seq", "heads", "projection"]).unwrap(),
        &y,
        1e-5,
    );
    // Linear scaling divides the frequencies.
    let mut lin = rope.clone();
    lin.scaling = Some(RopeScaling::Linear { factor: 4.0 });
    let y = run(&Node::new(lin), x.clone());
    let expect = rope_reference(x.tensor(), &pos, 8, &(&inv / 4.0));
    assert_close(
        &NamedTensor::wrap(expect, &["seq", "heads", "projection"]).unwrap(),
        &y,
        1e-5,
    );
}

#[test]
fn rope_llama3_scaling_formula() {
    let mut r = ApplyRoPE::new("projection");
    r.max_wavelength = 500000.0;
    r.scaling = Some(RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    });
    let base = ApplyRoPE {
        scaling: None,
        ..r.clone()
    }
    .inv_freq(128)
    .unwrap();
    let scaled = r.inv_freq(128).unwrap();
    let b: Vec<f32> = Vec::try_from(&base).unwrap();
    let s: Vec<f32> = Vec::try_from(&scaled).unwrap();
    // High frequencies (short wavelengths) unchanged, low frequencies divided by the factor.
    assert_eq!(b[0], s[0]);
    assert!((s[63] - b[63] / 8.0).abs() < 1e-12);
    // A middle frequency is interpolated.
    let mid = b
        .iter()
        .zip(&s)
        .position(|(x, y)| *y != *x && (*y - *x / 8.0).abs() > 1e-9);
    assert!(mid.is_some());
}

#[test]
fn masks() {
    let logits = NamedTensor::wrap(
        Tensor::zeros([4, 4], (Kind::Float, tch::Device::Cpu)),
        &["seq", "kv_seq"],
    )
    .unwrap();
    let y = run(
        &Node::new(ApplyCausalAttentionMask::default()),
        logits.clone(),
    );
    let v: Vec<f64> = y.to_vec_f64().unwrap();
    for i in 0..4 {
        for j in 0..4 {
            assert_eq!(v[i * 4 + j] == 0.0, j <= i, "causal ({i},{j})");
        }
    }
    let y = run(
        &Node::new(ApplyCausalSlidingWindowAttentionMask::new(2)),
        logits.clone(),
    );
    let v: Vec<f64> = y.to_vec_f64().unwrap();
    for i in 0..4 {
        for j in 0..4 {
            assert_eq!(v[i * 4 + j] == 0.0, j <= i && i - j < 2, "window ({i},{j})");
        }
    }
    let m = NamedTensor::wrap(Tensor::from_slice(&[true, false, true, true]), &["kv_seq"]).unwrap();
    let side = SideInputs::new().with_tensor("attn_mask", m);
    let y = Node::new(ApplyExplicitAttentionMask::default())
        .forward(logits.clone(), &side)
        .unwrap()
        .into_tensor()
        .unwrap();
    let v = y.to_vec_f64().unwrap();
    assert!(v[1] < -1e30 && v[0] == 0.0 && v[5] < -1e30);
    assert!(Node::new(ApplyExplicitAttentionMask::default())
        .forward(logits.clone(), &SideInputs::new())
        .unwrap_err()
        .to_string()
        .contains("attn_mask"));
    // Offsets from token positions: queries at positions 2,3 see keys 0..=2 and 0..=3.
    let q = NamedTensor::wrap(
        Tensor::zeros([2, 4], (Kind::Float, tch::Device::Cpu)),
        &["seq", "kv_seq"],
    )
    .unwrap();
    let side = SideInputs::new()
        .with_tensor(
            "token_positions",
            NamedTensor::wrap(Tensor::from_slice(&[2i64, 3]), &["seq"]).unwrap(),
        )
        .with_tensor(
            "kv_token_positions",
            NamedTensor::wrap(Tensor::from_slice(&[0i64, 1, 2, 3]), &["kv_seq"]).unwrap(),
        );
    let y = Node::new(ApplyCausalAttentionMask::default())
        .forward(q, &side)
        .unwrap()
        .into_tensor()
        .unwrap();
    let v = y.to_vec_f64().unwrap();
    assert_eq!(v.iter().filter(|x| **x == 0.0).count(), 7);
}

#[test]
fn dropout_uses_random_stream_and_is_off_in_eval() {
    let x = NamedTensor::wrap(
        Tensor::ones([1000], (Kind::Float, tch::Device::Cpu)),
        &["n"],
    )
    .unwrap();
    let d = Node::new(Dropout::new(0.25).unwrap());
    // No stream: identity (evaluation).
    assert_close(&run(&d, x.clone()), &x, 0.0);
    let side =
        |seed| SideInputs::new().with("random_stream", SideValue::Stream(RandomStream::new(seed)));
    let a = d
        .forward(x.clone(), &side(7))
        .unwrap()
        .into_tensor()
        .unwrap();
    let b = d
        .forward(x.clone(), &side(7))
        .unwrap()
        .into_tensor()
        .unwrap();
    let c = d
        .forward(x.clone(), &side(8))
        .unwrap()
        .into_tensor()
        .unwrap();
    assert_close(&a, &b, 0.0);
    assert!(max_abs_diff(a.tensor(), c.tensor()) > 0.0);
    let v = a.to_vec_f64().unwrap();
    let zeros = v.iter().filter(|x| **x == 0.0).count();
    assert!((150..350).contains(&zeros), "{zeros} zeros");
    assert!(v.iter().all(|x| *x == 0.0 || (x - 1.0 / 0.75).abs() < 1e-6));
    // The stream advances: two calls with the same stream differ.
    let s = side(9);
    let a = d.forward(x.clone(), &s).unwrap().into_tensor().unwrap();
    let b = d.forward(x.clone(), &s).unwrap().into_tensor().unwrap();
    assert!(max_abs_diff(a.tensor(), b.tensor()) > 0.0);
    // train = false turns it off even with a stream.
    let off = side(7).with("train", SideValue::Bool(false));
    assert_close(
        &d.forward(x.clone(), &off).unwrap().into_tensor().unwrap(),
        &x,
        0.0,
    );
    // A layer holding its own stream.
    let held = Node::new(Dropout::with_seed(0.5, 3).unwrap());
    let a = run(&held, x.clone());
    let b = run(&held, x.clone());
    assert!(max_abs_diff(a.tensor(), b.tensor()) > 0.0);
    assert!(Dropout::new(1.0).is_err());
}

#[test]
fn combinators() {
    let x = named(&[2, 3], &["batch", "f"], 13);
    let sq = Node::new(Elementwise {
        function: Activation::Square,
    });
    let neg = Node::new(Elementwise {
        function: Activation::Neg,
    });
    let res = Residual::build(sq.clone());
    assert_close(
        &run(&res, x.clone()),
        &NamedTensor::wrap(x.tensor() + x.tensor().square(), &["batch", "f"]).unwrap(),
        1e-6,
    );
    let add = BranchAndAddTogether::build(vec![sq.clone(), neg.clone(), Node::new(Identity {})]);
    assert_close(
        &run(&add, x.clone()),
        &NamedTensor::wrap(x.tensor().square(), &["batch", "f"]).unwrap(),
        1e-6,
    );
    let mul = BranchAndMultiplyTogether::build(vec![sq.clone(), neg.clone()]);
    assert_close(
        &run(&mul, x.clone()),
        &NamedTensor::wrap(-x.tensor().square() * x.tensor(), &["batch", "f"]).unwrap(),
        1e-6,
    );
    let seq = Sequential::new(vec![sq.clone(), neg.clone()]);
    assert_close(
        &run(&seq, x.clone()),
        &NamedTensor::wrap(-x.tensor().square(), &["batch", "f"]).unwrap(),
        1e-6,
    );
    let g = NamedGroup::build("block", vec![neg.clone(), sq.clone()]);
    assert_close(
        &run(&g, x.clone()),
        &NamedTensor::wrap(x.tensor().square(), &["batch", "f"]).unwrap(),
        1e-6,
    );
}
