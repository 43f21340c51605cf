//! What the data-parallel tests share (tests/distributed/data_parallel.rs, tests/distributed/failures.rs):
//! quickstart runs with a given per-rank batch, their parameters and losses, ranks started with
//! torchrun's environment, and the launcher's ranks.
use super::run_pzt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tch::Tensor;

pub fn quickstart() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recipes/quickstart.toml")
        .display()
        .to_string()
}

/// `--set` arguments for the quickstart with this per-process batch.
pub fn quick_sets(out: &Path, steps: u64, batch: usize, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        format!("run.out_dir=\"{}\"", out.display()),
        format!("train.steps={steps}"),
        format!("train.batch_size={batch}"),
        "train.log_every=1".into(),
        "train.eval_generate=2".into(),
        "train.threads=1".into(),
        "train.grad_accum=2".into(),
        "data.num_examples=600".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

pub fn train(recipe: &str, sets: &[String], extra: &[&str]) -> (i32, String, String) {
    let mut args: Vec<&str> = vec!["train", recipe];
    for s in sets {
        args.extend(["--set", s.as_str()]);
    }
    args.extend(extra);
    run_pzt(&args)
}

/// `pzt train` of the quickstart with `--set sets` and then `extra` arguments.
pub fn quick_cmd(sets: &[String], extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pzt"));
    cmd.args(["train", &quickstart()]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd.args(extra);
    cmd
}

pub fn params(out: &Path, step: u64) -> Vec<(String, Tensor)> {
    let mut v =
        Tensor::read_safetensors(out.join(format!("checkpoints/step-{step}/model.safetensors")))
            .unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The largest difference between two runs' parameters at `step`.
pub fn params_diff(a: &Path, b: &Path, step: u64) -> f64 {
    let (pa, pb) = (params(a, step), params(b, step));
    assert_eq!(pa.len(), pb.len());
    assert!(!pa.is_empty());
    pa.iter()
        .zip(&pb)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            super::max_abs_diff(ta, tb)
        })
        .fold(0.0, f64::max)
}

pub fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("loss").and_then(|l| l.as_f64()))
        .collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The ranks the launcher `pid` started.
pub fn children_of(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Starts the launcher in the background and waits for checkpoint `step` in `out`; returns it
/// and its two ranks.
pub fn launch_until(
    sets: &[String],
    extra: &[&str],
    out: &Path,
    step: u64,
) -> (std::process::Child, Vec<i32>) {
    let launcher = quick_cmd(sets, extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !out.join(format!("checkpoints/step-{step}")).exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    let ranks = children_of(launcher.id());
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    (launcher, ranks)
}

/// torchrun's environment on a command.
pub trait AsRank {
    /// Rank `rank` of `world`, the store on 127.0.0.1:`port`.
    fn as_rank(&mut self, rank: usize, world: usize, port: &str) -> &mut Self;
}

impl AsRank for Command {
    fn as_rank(&mut self, rank: usize, world: usize, port: &str) -> &mut Self {
        self.env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port)
    }
}
