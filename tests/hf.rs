//! Pretrained-model parity: logits of pzt's trees match HF `transformers` (float32, max abs
//! error 1e-4) on tiny random checkpoints made by tests/fixtures/make_hf_fixtures.py.
use pzt::named::NamedTensor;
use pzt::tree::SideInputs;
use std::path::{Path, PathBuf};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(case)
}

pub const CASES: [&str; 9] = [
    "llama-gqa",
    "llama3-tied-bias",
    "llama-linear-mqa",
    "mistral-sliding",
    "gemma",
    "gemma2",
    "gemma3",
    "neox-parallel",
    "neox-serial",
];

fn reference(case: &str) -> (tch::Tensor, tch::Tensor) {
    let r = tch::Tensor::read_safetensors(fixture(case).join("reference.safetensors")).unwrap();
    let get = |k: &str| r.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();
    (get("tokens"), get("logits"))
}

#[test]
fn logits_match_transformers() {
    let mut report = vec![];
    for case in CASES {
        let m = pzt::models::hf::load(&fixture(case), None, tch::Device::Cpu)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let (tokens, want) = reference(case);
        let x = NamedTensor::wrap(tokens, &["batch", "seq"]).unwrap();
        let y = m
            .tree
            .forward(x, &SideInputs::new())
            .unwrap_or_else(|e| panic!("{case}: {e}"))
            .into_tensor()
            .unwrap();
        let got = y
            .with_name_order(&["batch".into(), "seq".into(), "vocab".into()])
            .unwrap();
        let err = (got.tensor() - &want).abs().max().double_value(&[]);
        report.push(format!("{case}: {err:.2e}"));
        assert!(
            err < 1e-4,
            "{case}: max abs error {err}\n{}",
            report.join("\n")
        );
    }
    eprintln!("{}", report.join("\n"));
}
