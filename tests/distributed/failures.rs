//! Data-parallel runs that go wrong: a killed rank ends the run without a hang and the same
//! command resumes it exactly; SIGTERM stops every rank with one checkpoint; bad launches and
//! ranks that disagree exit 2; resuming on another number of processes is refused.
use crate::common::dist::*;
use crate::common::run_pzt;
use crate::common::tmpdir;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn a_killed_rank_ends_the_run_and_the_same_command_resumes_it_exactly() {
    let d = tmpdir("dist", "kill");
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
    let d = tmpdir("dist", "bad");
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
    let o = cmd.as_rank(0, 2, &port).output().unwrap();
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
    let d = tmpdir("dist", "term");
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
fn ranks_that_disagree_refuse_to_start() {
    let d = tmpdir("dist", "disagree");
    // Rank 1 accumulates differently (its collectives would not pair with rank 0's), or has
    // other data or another model with the same counts and shapes.
    for (k, (a, b)) in [
        ("train.grad_accum=2", "train.grad_accum=1"),
        ("data.max_digits=2", "data.max_digits=1"),
        ("model.rope_theta=10000", "model.rope_theta=500"),
    ]
    .into_iter()
    .enumerate()
    {
        let out = d.join(format!("run{k}"));
        let port = free_port().to_string();
        let ranks: Vec<_> = [a, b]
            .iter()
            .enumerate()
            .map(|(rank, set)| {
                quick_cmd(&quick_sets(&out, 4, 4, &[set]), &[])
                    .as_rank(rank, 2, &port)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (rank, c) in ranks.into_iter().enumerate() {
            let o = c.wait_with_output().unwrap();
            let e = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{b}: rank {rank}: {e}");
            assert!(
                e.contains("the ranks differ in their [train], [optim] or [checkpoint] settings, data or model"),
                "{b}: rank {rank}: {e}"
            );
        }
        assert!(!out.join("checkpoints").exists());
    }
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
    .as_rank(0, 1, &free_port().to_string())
    .output()
    .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("needs every rank on a GPU"), "{e}");
}

#[test]
fn a_port_that_answers_but_is_no_store_gives_up_and_obeys_signals() {
    let d = tmpdir("dist", "nostore");
    let mut sets = quick_sets(&d.join("run"), 2, 4, &[]);
    sets.push("train.distributed_timeout_s=2".into());
    // Something listens on the port and accepts, but never speaks the store's protocol.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let held = std::thread::spawn(move || {
        let mut conns = vec![];
        for c in listener.incoming().take(64) {
            match c {
                Ok(c) => conns.push(c),
                Err(_) => break,
            }
        }
    });
    let t0 = Instant::now();
    let o = quick_cmd(&sets, &[]).as_rank(1, 2, &port).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("rank 1: could not reach the store"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    // SIGTERM while it waits (the timeout is long): it exits at once.
    sets.push("train.distributed_timeout_s=600".into());
    let child = quick_cmd(&sets, &[])
        .as_rank(1, 2, &port)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = Instant::now();
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    drop(held);
}

#[test]
fn a_port_in_use_and_bad_input_in_the_ranks_are_said_plainly() {
    let d = tmpdir("dist", "plain");
    // Rank 0 cannot listen where something else does: it says so.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let sets = quick_sets(&d.join("run"), 2, 4, &["train.distributed_timeout_s=5"]);
    let o = quick_cmd(&sets, &[]).as_rank(0, 2, &port).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{e}");
    assert!(e.contains("rank 0: could not start the store on"), "{e}");
    drop(taken);
    // Bad input found by the ranks (a model smaller than the tokenizer): exit 2, and no
    // "run the same command to resume", which would fail the same way.
    let bad = quick_sets(&d.join("run2"), 2, 4, &["model.vocab_size=8"]);
    let (c, _, e) = train(&quickstart(), &bad, &["--nproc", "2"]);
    assert_eq!(c, 2, "{e}");
    assert!(!e.contains("run the same command to resume"), "{e}");
}
