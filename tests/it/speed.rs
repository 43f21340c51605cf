//! What the speed work changed, checked for what it must keep: `Linear`'s matmul path equals
//! the einsum it replaced (values and gradients, any axis order), and `pzt train --profile`
//! writes its trace and tables, and spins less unless told (dropped gradients: tests/it/optim.rs).
use crate::common::*;
use pzt::layers::linear::Linear;
use pzt::prelude::*;
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

/// The `env` of the last line of a run's environment.jsonl.
fn recorded_env(run: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("environment.jsonl")).unwrap();
    let last = text.lines().last().unwrap();
    serde_json::from_str::<serde_json::Value>(last).unwrap()["env"].clone()
}

#[test]
fn train_spins_less_unless_the_user_chose() {
    let d = std::env::temp_dir().join(format!("pzt-speed-spin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    for (name, user) in [("default", None), ("chosen", Some("PASSIVE"))] {
        let out = d.join(name);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pzt"));
        cmd.args(["train", "recipes/quickstart.toml", "--set", "train.steps=2"])
            .args(["--set", "train.eval_every=0", "--set"])
            .arg(format!("run.out_dir=\"{}\"", out.display()))
            .env_remove("GOMP_SPINCOUNT")
            .env_remove("OMP_WAIT_POLICY");
        if let Some(p) = user {
            cmd.env("OMP_WAIT_POLICY", p);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let env = recorded_env(&out);
        match user {
            None => assert_eq!(env["GOMP_SPINCOUNT"], "10000", "{env}"),
            Some(p) => {
                assert_eq!(env["OMP_WAIT_POLICY"], p, "{env}");
                assert!(env.get("GOMP_SPINCOUNT").is_none(), "{env}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}
