//! The `pzt` binary: version report, the demo, and bad input (exit code 2, no panic).
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
