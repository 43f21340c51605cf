//! The `pzt` binary: version report, the demo, and bad input (exit code 2, no panic).
mod common;
use std::process::Command;

fn pzt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pzt"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap()
}

#[test]
fn version_reports_pzt_libtorch_and_devices() {
    let out = pzt(&["--version"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains(&format!("pzt {}", env!("CARGO_PKG_VERSION"))),
        "{s}"
    );
    assert!(s.contains("libtorch 2.11.0"), "{s}");
    assert!(s.contains("devices: cpu"), "{s}");
    assert!(s.contains("default device: "), "{s}");
}

#[test]
fn demo_xor_trains() {
    let out = pzt(&["demo", "xor", "--device", "cpu", "--show"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{s}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        s.contains("on cpu") && s.contains("reached loss < 0.001"),
        "{s}"
    );
    assert!(
        s.contains("Affine") && s.contains("Elementwise(tanh)"),
        "{s}"
    );
}

#[test]
fn bad_input_exits_2_without_a_panic() {
    for args in [
        &["demo", "xor", "--device", "tpu"][..],
        &["demo", "xor", "--max-steps", "many"],
        &["frobnicate"],
    ] {
        let out = pzt(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
        assert!(err.contains("error"), "{err}");
    }
    // A run that cannot reach its target is a failed run: exit 1.
    let out = pzt(&["demo", "xor", "--max-steps", "3", "--device", "cpu"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn absurd_run_settings_exit_2_before_anything_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let recipe = root.join("recipes/quickstart.toml");
    for (set, want) in [
        ("train.threads=0", "threads must be 1 to 1024"),
        ("train.threads=-3", "threads must be 1 to 1024"),
        ("train.threads=100000", "threads must be 1 to 1024"),
        ("train.batch_size=1000000000000", "more than pzt accepts"),
        ("run.name=\"..\"", "one path component"),
        ("run.name=\".\"", "one path component"),
        ("run.out_dir=\"\"", "not a run directory"),
        ("run.out_dir=\".\"", "not a run directory"),
        ("data.num_examples=1000000000000", "more than pzt generates"),
        ("data.seq_len=1000000000000", "more than pzt accepts"),
        ("data.length=0", "length must be 1 to"),
    ] {
        let (code, o, e) = common::run_pzt(&["train", recipe.to_str().unwrap(), "--set", set]);
        assert_eq!(code, 2, "{set}: {o}{e}");
        assert!(e.contains(want), "{set}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    let hf = root.join("tests/fixtures/hf/gemma2");
    for t in ["nan", "inf"] {
        let (code, _, e) = common::run_pzt(&[
            "generate",
            hf.to_str().unwrap(),
            "--tokens",
            "1 2",
            "--temperature",
            t,
        ]);
        assert_eq!(code, 2, "{e}");
        assert!(e.contains("--temperature must be a finite number"), "{e}");
    }
}
