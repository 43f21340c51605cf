//! What the speed work changed, checked for what it must keep: `Linear`'s matmul path equals
//! the einsum it replaced (values and gradients, any axis order), gradients are dropped rather
//! than zeroed (a parameter without one is left alone), and `pzt train --profile` writes its
//! trace and tables.
mod common;
use common::*;
use pzt::layers::linear::Linear;
use pzt::params::Parameter;
use pzt::prelude::*;
use pzt::spec::{OptimConfig, OptimKind, Schedule};
use pzt::train::optim::Optimizer;
use tch::{Kind, Tensor};

fn grads_of(x: &Tensor, w: &Tensor, y: &Tensor) -> (Tensor, Tensor) {
    y.square().sum(Kind::Float).backward();
    (x.grad(), w.grad())
}

#[test]
fn linear_matmul_path_equals_einsum_for_any_axis_order() {
    let b = Builder::new(7);
    // Two input axes, stored in the input in the other order and not trailing.
    let lin = Linear::new(
        axes(&[("heads", 2), ("projection", 3)]),
        axes(&[("embedding", 4), ("extra", 2)]),
    )
    .build(&b.scope("o"), None)
    .unwrap();
    let x = named(&[3, 5, 2, 6], &["projection", "seq", "heads", "batch"], 1);
    let xt = x.tensor().detach().set_requires_grad(true);
    let y = lin
        .forward(
            NamedTensor::wrap(xt.shallow_clone(), &["projection", "seq", "heads", "batch"])
                .unwrap(),
            &SideInputs::new(),
        )
        .unwrap()
        .into_tensor()
        .unwrap();
    assert_eq!(y.names(), ["seq", "batch", "embedding", "extra"]);
    let w = lin.param("weights").unwrap(); // [heads, projection, embedding, extra]
    let wt = w.detach().set_requires_grad(true);
    let expect = Tensor::einsum("psha,hpex->saex", &[&xt, &wt], None::<&[i64]>);
    assert!(max_abs_diff(y.tensor(), &expect) < 1e-5);
    // Gradients through both paths agree.
    let (gx_ref, gw_ref) = grads_of(&xt, &wt, &expect);
    let xt2 = x.tensor().detach().set_requires_grad(true);
    let y2 = lin
        .forward(
            NamedTensor::wrap(
                xt2.shallow_clone(),
                &["projection", "seq", "heads", "batch"],
            )
            .unwrap(),
            &SideInputs::new(),
        )
        .unwrap()
        .into_tensor()
        .unwrap();
    y2.tensor().square().sum(Kind::Float).backward();
    assert!(max_abs_diff(&xt2.grad(), &gx_ref) < 1e-4);
    let gw = lin.parameters()[0].grad().expect("a weight gradient");
    assert!(max_abs_diff(&gw, &gw_ref) < 1e-4);
}

#[test]
fn zero_grad_drops_gradients_and_a_parameter_without_one_is_not_updated() {
    let a = Parameter::new("a", Tensor::from_slice(&[1f32, 2.]));
    let b = Parameter::new("b", Tensor::from_slice(&[3f32, 4.]));
    let config = OptimConfig {
        kind: OptimKind::Adamw,
        lr: 0.1,
        betas: [0.9, 0.99],
        eps: 1e-8,
        weight_decay: 0.1,
        decay_norms_and_biases: true,
        momentum: 0.0,
        nesterov: false,
        clip_grad_norm: None,
        schedule: Schedule::Constant,
        warmup_steps: 0,
        min_lr_ratio: 0.0,
    };
    let mut opt = Optimizer::new(vec![a.clone(), b.clone()], config);
    for _ in 0..2 {
        opt.zero_grad().unwrap();
        assert!(a.grad().is_none() && b.grad().is_none());
        // Only `a` takes part in the loss.
        (a.value() * 2.0).sum(Kind::Float).backward();
        assert!(b.grad().is_none());
        assert!(opt.grad_norm().unwrap() > 0.0);
        opt.step(0.1).unwrap();
    }
    let bv = Vec::<f32>::try_from(&b.value()).unwrap();
    assert_eq!(bv, vec![3.0, 4.0], "no gradient: no update, no decay");
    let av = Vec::<f32>::try_from(&a.value()).unwrap();
    assert!(av[0] < 1.0 && av[1] < 2.0);
    // The norm is each gradient's float32 norm, combined: sqrt(2^2 + 2^2).
    let norm = opt.grad_norm().unwrap();
    assert!((norm - 8f64.sqrt()).abs() < 1e-6, "{norm}");
}

#[test]
fn train_profile_writes_a_trace_and_prints_the_operators() {
    let d = std::env::temp_dir().join(format!("pzt-speed-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let trace = d.join("trace.json");
    let out = d.join("run");
    let (code, stdout, stderr) = run_pzt(&[
        "train",
        "recipes/quickstart.toml",
        "--set",
        "train.steps=4",
        "--set",
        "train.eval_every=0",
        "--set",
        &format!("run.out_dir=\"{}\"", out.display()),
        "--profile",
        trace.to_str().unwrap(),
        "--profile-steps",
        "2",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("profile of 2 step(s)"), "{stderr}");
    assert!(stderr.contains("| operator | self ms |"), "{stderr}");
    assert!(stderr.contains("| aten::mm"), "{stderr}");
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().expect("traceEvents");
    assert!(events.iter().any(|e| e["name"] == "aten::mm"));
    // Bad requests are refused before training.
    for (flag, value, msg) in [
        ("--profile-steps", "0", "--profile-steps 0"),
        ("--profile", "/nonexistent-dir/t.json", "does not exist"),
    ] {
        let mut args = vec!["train", "recipes/quickstart.toml", "--profile", "t.json"];
        if flag == "--profile" {
            args = vec!["train", "recipes/quickstart.toml"];
        }
        args.extend([flag, value]);
        let (code, _, stderr) = run_pzt(&args);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(msg), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&d);
}
