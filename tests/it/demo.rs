//! An MLP built from combinators learns XOR: the loss falls below 1e-3.
use pzt::demo::{train_xor, XorConfig};

#[test]
fn mlp_learns_xor() {
    let report = train_xor(&XorConfig::default(), |_, _| {}).unwrap();
    let first = report.losses[0].1;
    let last = report.losses.last().unwrap().1;
    assert!(first > 0.1, "initial loss {first}");
    assert!(
        last < 1e-3,
        "final loss {last} after {} steps",
        report.losses.len()
    );
    // The loss falls overall: the mean of the last tenth is far below the first tenth.
    let n = report.losses.len() / 10;
    let mean = |s: &[(usize, f64)]| s.iter().map(|x| x.1).sum::<f64>() / s.len() as f64;
    assert!(mean(&report.losses[report.losses.len() - n..]) < 0.1 * mean(&report.losses[..n]));
    let want = [0.0, 1.0, 1.0, 0.0];
    for (p, w) in report.predictions.iter().zip(want) {
        assert!((p - w).abs() < 0.1, "prediction {p} for target {w}");
    }
}

#[test]
fn xor_training_is_deterministic() {
    let cfg = XorConfig {
        max_steps: 30,
        ..Default::default()
    };
    let a = train_xor(&cfg, |_, _| {}).unwrap();
    let b = train_xor(&cfg, |_, _| {}).unwrap();
    assert_eq!(a.losses, b.losses);
}
