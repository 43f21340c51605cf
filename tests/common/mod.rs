#![allow(dead_code)]
pub mod browser;
pub mod dist;
pub mod finetune;
pub mod tiny;
use pzt::prelude::*;
use tch::{Device, Kind, Tensor};

/// A fresh, empty directory for one test, `pzt-GROUP-NAME-PID` under the system's temp dir
/// (GROUP is the test file, so names stay apart in one test binary).
pub fn tmpdir(group: &str, name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("pzt-{group}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn randn(shape: &[i64], seed: u64) -> Tensor {
    pzt::backend::seeded_random(
        seed,
        pzt::backend::Distribution::Normal,
        shape,
        Kind::Float,
        Device::Cpu,
    )
    .unwrap()
}

pub fn named(shape: &[i64], names: &[&str], seed: u64) -> NamedTensor {
    NamedTensor::wrap(randn(shape, seed), names).unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Compares two named tensors after aligning their axis order.
pub fn assert_close(a: &NamedTensor, b: &NamedTensor, tol: f64) {
    let b = b.order_like(a).unwrap_or_else(|e| {
        panic!(
            "named shapes differ: {} vs {}: {e}",
            a.describe(),
            b.describe()
        )
    });
    assert_eq!(
        a.tensor().size(),
        b.tensor().size(),
        "{} vs {}",
        a.describe(),
        b.describe()
    );
    let d = max_abs_diff(a.tensor(), b.tensor());
    assert!(d <= tol, "max abs diff {d} > {tol}");
}

pub fn axes(pairs: &[(&str, i64)]) -> Axes {
    pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

/// Runs the `pzt` binary: no colour, and no `LD_LIBRARY_PATH` (it finds libtorch by its rpath).
pub fn pzt(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pzt"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap()
}

/// [`pzt`]'s exit code, stdout and stderr.
pub fn run_pzt(args: &[&str]) -> (i32, String, String) {
    let out = pzt(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The path of `tests/fixtures/<p>`, as a string for command lines.
pub fn fixture(p: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
        .display()
        .to_string()
}

/// The JSON a page carries.
pub fn page_data(path: &std::path::Path) -> serde_json::Value {
    let html = std::fs::read_to_string(path).unwrap();
    let start = html
        .find(r#"<script id="pzt-data" type="application/json">"#)
        .unwrap();
    let rest = &html[start..];
    let body = &rest[rest.find('>').unwrap() + 1..rest.find("</script>").unwrap()];
    serde_json::from_str(&body.replace("<\\/", "</")).unwrap()
}

/// Every parameter entry of a page's model tree (`tree` of [`page_data`]), in order.
pub fn page_params(node: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    out.extend(node["params"].as_array().unwrap().iter().cloned());
    for c in node["children"].as_array().unwrap() {
        page_params(c, out);
    }
}
