//! Data-parallel training over c10d (Gloo, several processes on this machine): `pzt train
//! --nproc N` and the torchrun-style environment give the parameters of one process with
//! N times the batch; a killed rank ends the run without a hang, and the same command resumes
//! it to the uninterrupted run's end; resuming on another number of processes is refused.
mod common;
use common::finetune::base_dir;
use common::{max_abs_diff, run_pzt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tch::Tensor;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pzt-dist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn quickstart() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recipes/quickstart.toml")
        .display()
        .to_string()
}

/// `--set` arguments for the quickstart with this per-process batch.
fn quick_sets(out: &Path, steps: u64, batch: usize, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        format!("run.out_dir=\"{}\"", out.display()),
        format!("train.steps={steps}"),
        format!("train.batch_size={batch}"),
        format!("model.input.axes.batch={batch}"),
        "train.log_every=1".into(),
        "train.eval_generate=2".into(),
        "train.threads=1".into(),
        "train.grad_accum=2".into(),
        "data.num_examples=600".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn train(recipe: &str, sets: &[String], extra: &[&str]) -> (i32, String, String) {
    let mut args: Vec<&str> = vec!["train", recipe];
    for s in sets {
        args.extend(["--set", s.as_str()]);
    }
    args.extend(extra);
    run_pzt(&args)
}

/// `pzt train` of the quickstart with `--set sets` and then `extra` arguments.
fn quick_cmd(sets: &[String], extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pzt"));
    cmd.args(["train", &quickstart()]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd.args(extra);
    cmd
}

fn params(out: &Path, step: u64) -> Vec<(String, Tensor)> {
    let mut v =
        Tensor::read_safetensors(out.join(format!("checkpoints/step-{step}/model.safetensors")))
            .unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The largest difference between two runs' parameters at `step`.
fn params_diff(a: &Path, b: &Path, step: u64) -> f64 {
    let (pa, pb) = (params(a, step), params(b, step));
    assert_eq!(pa.len(), pb.len());
    assert!(!pa.is_empty());
    pa.iter()
        .zip(&pb)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            max_abs_diff(ta, tb)
        })
        .fold(0.0, f64::max)
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("loss").and_then(|l| l.as_f64()))
        .collect()
}

#[test]
fn two_ranks_of_four_match_one_process_of_eight_on_the_quickstart() {
    let d = tmpdir("quick");
    let (one, two) = (d.join("one"), d.join("two"));
    let (c, o, e) = train(&quickstart(), &quick_sets(&one, 6, 8, &[]), &[]);
    assert_eq!(c, 0, "{o}{e}");
    let (c, o, e) = train(
        &quickstart(),
        &quick_sets(&two, 6, 4, &[]),
        &["--nproc", "2"],
    );
    assert_eq!(c, 0, "{o}{e}");
    assert!(
        o.contains("2 processes (gloo), global batch 16 (2 x 4 x 2)"),
        "{o}"
    );
    let diff = params_diff(&one, &two, 6);
    assert!(diff <= 1e-5, "parameters differ by {diff}");
    assert!(diff > 0.0 || losses(&one) == losses(&two));
    for (a, b) in losses(&one).iter().zip(losses(&two)) {
        assert!((a - b).abs() < 1e-5, "loss {a} vs {b}");
    }
    // Rank 0 alone wrote the run's files; its checkpoint holds both ranks' generator states.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(two.join("checkpoints/step-6/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["world_size"], 2);
    assert_eq!(state["rng_ranks"].as_array().unwrap().len(), 1);
    assert_eq!(losses(&two).len(), 6);
    let env: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(two.join("environment.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(env["world_size"], 2);
    assert_eq!(env["distributed_backend"], "gloo");
    // Resuming on another number of processes is refused, before anything runs.
    let (c, _, e) = train(
        &quickstart(),
        &quick_sets(&two, 8, 4, &[]),
        &["--nproc", "3"],
    );
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("written by a run on 2 process(es)"), "{e}");
    let (c, _, e) = train(&quickstart(), &quick_sets(&two, 8, 4, &[]), &[]);
    assert_eq!(c, 2, "{e}");
    assert!(
        e.contains("written by a run on 2 process(es), and this one has 1"),
        "{e}"
    );
}

#[test]
fn two_ranks_match_one_process_on_a_pretrained_model() {
    let d = tmpdir("hf");
    let recipe = common::finetune::lora_recipe(&d, &base_dir(), 4, "");
    let recipe = recipe.to_str().unwrap();
    let sets = |out: &Path, batch: usize| {
        vec![
            format!("run.out_dir=\"{}\"", out.display()),
            format!("train.batch_size={batch}"),
            "train.eval_every=0".into(),
            "checkpoint.every_steps=4".into(),
        ]
    };
    let (one, two) = (d.join("one"), d.join("two"));
    let (c, o, e) = train(recipe, &sets(&one, 8), &[]);
    assert_eq!(c, 0, "{o}{e}");
    let (c, o, e) = train(recipe, &sets(&two, 4), &["--nproc", "2"]);
    assert_eq!(c, 0, "{o}{e}");
    let diff = params_diff(&one, &two, 4);
    assert!(diff <= 1e-5, "parameters differ by {diff}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn ranks_started_with_torchruns_environment_train_together() {
    let d = tmpdir("env");
    let (launched, env) = (d.join("launched"), d.join("env"));
    let (c, o, e) = train(
        &quickstart(),
        &quick_sets(&launched, 4, 4, &[]),
        &["--nproc", "2"],
    );
    assert_eq!(c, 0, "{o}{e}");
    let port = free_port().to_string();
    let sets = quick_sets(&env, 4, 4, &[]);
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            let mut cmd = quick_cmd(&sets, &[]);
            cmd.env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = ranks
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for (rank, o) in outs.iter().enumerate() {
        assert!(
            o.status.success(),
            "rank {rank}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Rank 0 reports; rank 1 says nothing.
    assert!(String::from_utf8_lossy(&outs[0].stdout).contains("done: `quickstart` step 4/4"));
    assert!(outs[1].stdout.is_empty());
    // The same world and data as `--nproc 2`: the same parameters, bit for bit.
    assert_eq!(params_diff(&launched, &env, 4), 0.0);
}

/// The ranks the launcher `pid` started.
fn children_of(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Starts the launcher in the background and waits for checkpoint `step` in `out`; returns it
/// and its two ranks.
fn launch_until(
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

#[test]
fn a_killed_rank_ends_the_run_and_the_same_command_resumes_it_exactly() {
    let d = tmpdir("kill");
    let (whole, cut) = (d.join("whole"), d.join("cut"));
    let extra = ["checkpoint.every_steps=10", "checkpoint.keep_last=2"];
    let steps = 400;
    let (c, o, e) = train(
        &quickstart(),
        &quick_sets(&whole, steps, 4, &extra),
        &["--nproc", "2"],
    );
    assert_eq!(c, 0, "{o}{e}");
    let sets = quick_sets(&cut, steps, 4, &extra);
    let (mut launcher, ranks) = launch_until(&sets, &["--nproc", "2"], &cut, 20);
    // SAFETY: killing a process this test started (through the launcher).
    unsafe { libc::kill(ranks[1], libc::SIGKILL) };
    let t1 = Instant::now();
    let status = loop {
        if let Some(s) = launcher.try_wait().unwrap() {
            break s;
        }
        assert!(t1.elapsed() < Duration::from_secs(60), "the run hangs");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(launcher.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("rank 1 was killed by signal 9"), "{err}");
    let (c, o, e) = train(&quickstart(), &sets, &["--nproc", "2"]);
    assert_eq!(c, 0, "{o}{e}");
    assert!(o.contains("resuming `quickstart`"), "{o}");
    assert_eq!(params_diff(&whole, &cut, steps), 0.0);
}

#[test]
fn bad_launches_exit_2_with_a_message() {
    let d = tmpdir("bad");
    let sets = quick_sets(&d.join("run"), 2, 4, &[]);
    for n in ["0", "1000000000000", "-3", "x"] {
        let (c, _, e) = train(&quickstart(), &sets, &["--nproc", n]);
        assert_eq!(c, 2, "--nproc {n}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    let run_env = |vars: &[(&str, &str)]| {
        let mut cmd = quick_cmd(&sets, &[]);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (c, e) = run_env(&[("RANK", "5"), ("WORLD_SIZE", "2")]);
    assert_eq!(c, Some(2), "{e}");
    assert!(e.contains("must be below the world size"), "{e}");
    let (c, e) = run_env(&[("RANK", "1"), ("WORLD_SIZE", "2")]);
    assert_eq!(c, Some(2), "{e}");
    assert!(e.contains("MASTER_ADDR is not set"), "{e}");
    let (c, e) = run_env(&[("RANK", "0")]);
    assert_eq!(c, Some(2), "{e}");
    let (c, e) = run_env(&[
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "99999"),
    ]);
    assert_eq!(c, Some(2), "{e}");
    // A world that never gathers: rank 0 of 2 alone gives up after distributed_timeout_s.
    let mut lonely = sets.clone();
    lonely.push("train.distributed_timeout_s=2".into());
    let mut cmd = quick_cmd(&lonely, &[]);
    let port = free_port().to_string();
    let t0 = Instant::now();
    let o = cmd
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", &port)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(60));
    assert!(e.contains("rank 0"), "{e}");
    assert!(!e.contains("panicked") && !e.contains("frame #"), "{e}");
    // A store that cannot be reached: a message, no C++ backtrace.
    let o = quick_cmd(&lonely, &[])
        .env("RANK", "1")
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "nosuchhost.invalid")
        .env("MASTER_PORT", &port)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("rank 1: could not reach the store at nosuchhost.invalid"),
        "{e}"
    );
    assert!(!e.contains("frame #") && !e.contains("socket.cpp"), "{e}");
    // `pzt plan` states the world and the global batch.
    let (c, o, _) = run_pzt(&["plan", &quickstart(), "--nproc", "4"]);
    assert_eq!(c, 0);
    assert!(
        o.contains("training    global batch 128 (4 processes x batch_size 32 x grad_accum 1)"),
        "{o}"
    );
}

#[test]
fn sigterm_to_the_launcher_stops_every_rank_after_one_step_with_a_checkpoint() {
    let d = tmpdir("term");
    let out = d.join("run");
    let sets = quick_sets(&out, 2000, 4, &["checkpoint.every_steps=10"]);
    let (launcher, ranks) = launch_until(&sets, &["--nproc", "2", "--json"], &out, 10);
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) };
    let o = launcher.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(1), "{stdout}{stderr}");
    // One summary (rank 0's), saying where it stopped; the ranks are gone.
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["world_size"], 2);
    let step = summary["steps"].as_u64().unwrap();
    assert!(step < 2000);
    assert!(out.join(format!("checkpoints/step-{step}")).exists());
    assert!(
        stderr.contains(&format!("interrupted at step {step}")),
        "{stderr}"
    );
    for r in ranks {
        assert!(
            !Path::new(&format!("/proc/{r}")).exists() || {
                let s = std::fs::read_to_string(format!("/proc/{r}/stat")).unwrap_or_default();
                s.contains(") Z ")
            }
        );
    }
}

#[test]
fn torchrun_itself_launches_pzt_ranks() {
    // The project's virtualenv (made by `make setup`) has PyTorch's own launcher; its agent
    // hosts the store (TORCHELASTIC_USE_AGENT_STORE=True) and sets the ranks' environment.
    let torchrun = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/torchrun");
    assert!(
        torchrun.exists(),
        "{} is missing: run make setup",
        torchrun.display()
    );
    let d = tmpdir("torchrun");
    let (launched, agent) = (d.join("launched"), d.join("agent"));
    let (c, o, e) = train(
        &quickstart(),
        &quick_sets(&launched, 4, 4, &[]),
        &["--nproc", "2"],
    );
    assert_eq!(c, 0, "{o}{e}");
    let port = free_port().to_string();
    let mut cmd = Command::new(&torchrun);
    cmd.args([
        "--no-python",
        "--nproc-per-node",
        "2",
        "--master-port",
        &port,
    ])
    .arg(env!("CARGO_BIN_EXE_pzt"))
    .args(["train", &quickstart()]);
    for s in quick_sets(&agent, 4, 4, &[]) {
        cmd.args(["--set", &s]);
    }
    let o = cmd.output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("2 processes (gloo), global batch 16 (2 x 4 x 2)"),
        "{out}"
    );
    assert_eq!(params_diff(&launched, &agent, 4), 0.0);
}

#[test]
fn a_world_of_one_runs_its_collectives_and_equals_one_process() {
    // WORLD_SIZE=1 with MASTER_ADDR and MASTER_PORT (torchrun --nproc-per-node 1) joins a group
    // of one: the store, the reducer and the control all-reduces run, and change nothing.
    let d = tmpdir("one");
    let (alone, group) = (d.join("alone"), d.join("group"));
    let (c, o, e) = train(&quickstart(), &quick_sets(&alone, 4, 4, &[]), &[]);
    assert_eq!(c, 0, "{o}{e}");
    let o = quick_cmd(&quick_sets(&group, 4, 4, &[]), &[])
        .env("RANK", "0")
        .env("WORLD_SIZE", "1")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", free_port().to_string())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("; 1 process (gloo), global batch 8 (1 x 4 x 2)"),
        "{out}"
    );
    assert_eq!(params_diff(&alone, &group, 4), 0.0);
    assert_eq!(losses(&alone), losses(&group));
}

#[test]
fn ranks_that_disagree_refuse_to_start() {
    let d = tmpdir("disagree");
    let out = d.join("run");
    // Rank 1 accumulates differently: its collectives would not pair with rank 0's.
    let port = free_port().to_string();
    let ranks: Vec<_> = [2, 1]
        .iter()
        .enumerate()
        .map(|(rank, accum)| {
            let accum = format!("train.grad_accum={accum}");
            quick_cmd(&quick_sets(&out, 4, 4, &[&accum]), &[])
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (rank, c) in ranks.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "rank {rank}: {e}");
        assert!(
            e.contains("the ranks differ in their [train], [optim] or [checkpoint] settings"),
            "rank {rank}: {e}"
        );
    }
    assert!(!out.join("checkpoints").exists());
    // NCCL on CPU ranks is a setting's mistake (exit 2), not a lost peer.
    let o = quick_cmd(
        &quick_sets(
            &d.join("nccl"),
            2,
            4,
            &["train.distributed_backend=\"nccl\""],
        ),
        &[],
    )
    .env("RANK", "0")
    .env("WORLD_SIZE", "1")
    .env("MASTER_ADDR", "127.0.0.1")
    .env("MASTER_PORT", free_port().to_string())
    .output()
    .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("needs every rank on a GPU"), "{e}");
}
