//! Data-parallel training over c10d (Gloo, several processes on this machine): `pzt train
//! --nproc N`, ranks started with torchrun's environment, and torchrun itself give the
//! parameters of one process with N times the batch. Failures: tests/distributed/failures.rs.
use crate::common;
use crate::common::dist::*;
use crate::common::finetune::base_dir;
use crate::common::tmpdir;
use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn two_ranks_of_four_match_one_process_of_eight_on_the_quickstart() {
    let d = tmpdir("dist", "quick");
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

/// The two ranks also run their loss in chunks of 7 tokens (`loss_chunk_tokens`): the head
/// trains here (full fine-tuning), so each chunk is recomputed in backward, and its gradients
/// reduce across ranks as the whole logits' do.
#[test]
fn two_ranks_match_one_process_on_a_pretrained_model() {
    let d = tmpdir("dist", "hf");
    let recipe = common::finetune::lora_recipe(&d, &base_dir(), 4, "");
    let recipe = recipe.to_str().unwrap();
    let sets = |out: &Path, batch: usize, chunk: usize| {
        vec![
            format!("run.out_dir=\"{}\"", out.display()),
            format!("train.batch_size={batch}"),
            format!("train.loss_chunk_tokens={chunk}"),
            "train.eval_every=0".into(),
            "checkpoint.every_steps=4".into(),
        ]
    };
    let (one, two) = (d.join("one"), d.join("two"));
    let (c, o, e) = train(recipe, &sets(&one, 8, 1_000_000), &[]);
    assert_eq!(c, 0, "{o}{e}");
    let (c, o, e) = train(recipe, &sets(&two, 4, 7), &["--nproc", "2"]);
    assert_eq!(c, 0, "{o}{e}");
    let diff = params_diff(&one, &two, 4);
    assert!(diff <= 1e-5, "parameters differ by {diff}");
}

/// A 4-step quickstart run by `--nproc 2` (2 x 4 examples, `grad_accum = 2`) in `d/launched`.
fn launched_reference(d: &Path) -> std::path::PathBuf {
    let launched = d.join("launched");
    let (c, o, e) = train(
        &quickstart(),
        &quick_sets(&launched, 4, 4, &[]),
        &["--nproc", "2"],
    );
    assert_eq!(c, 0, "{o}{e}");
    launched
}

#[test]
fn ranks_started_with_torchruns_environment_train_together() {
    let d = tmpdir("dist", "env");
    let (launched, env) = (launched_reference(&d), d.join("env"));
    let port = free_port().to_string();
    let sets = quick_sets(&env, 4, 4, &[]);
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            let mut cmd = quick_cmd(&sets, &[]);
            cmd.as_rank(rank, 2, &port)
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
    let d = tmpdir("dist", "torchrun");
    let (launched, agent) = (launched_reference(&d), d.join("agent"));
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
    let d = tmpdir("dist", "one");
    let (alone, group) = (d.join("alone"), d.join("group"));
    let (c, o, e) = train(&quickstart(), &quick_sets(&alone, 4, 4, &[]), &[]);
    assert_eq!(c, 0, "{o}{e}");
    let o = quick_cmd(&quick_sets(&group, 4, 4, &[]), &[])
        .as_rank(0, 1, &free_port().to_string())
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

/// DPO with LoRA (the reference: the adapters off) on two ranks of 2 pairs equals one process of
/// 4: the loss is a mean over pairs, so each rank's is weighed by its share of the pairs. The
/// ranks run their log-probabilities in chunks of 5 tokens, with the frozen head's gradient
/// computed in the forward.
#[test]
fn two_ranks_of_dpo_pairs_match_one_process() {
    let d = tmpdir("dist", "dpo");
    let rows: String = (0..16)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"prompt": format!("Question {i}:"), "chosen": format!(" yes {}", i * 7), "rejected": format!(" no, {} is wrong", i + 3)})
            )
        })
        .collect();
    std::fs::write(d.join("pairs.jsonl"), rows).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let recipe = d.join("dpo.toml");
    std::fs::write(
        &recipe,
        format!(
            "[model]\nhf = \"{}\"\n[data]\nsource = \"preference\"\nfiles = [\"pairs.jsonl\"]\nseq_len = 64\neval_fraction = 0.0\n[objective]\nkind = \"dpo\"\nbeta = 0.5\n[strategy]\nkind = \"lora\"\nlora = {{ rank = 4, targets = \"all-linear\" }}\n[train]\nsteps = 3\nlog_every = 1\nthreads = 1\n[optim]\nlr = 1e-2\n",
            fixtures.join("hf/chat-tiny").display()
        ),
    )
    .unwrap();
    let recipe = recipe.to_str().unwrap();
    let sets = |out: &Path, batch: usize| {
        vec![
            format!("run.out_dir=\"{}\"", out.display()),
            format!("train.batch_size={batch}"),
        ]
    };
    let (one, two) = (d.join("one"), d.join("two"));
    let (c, o, e) = train(recipe, &sets(&one, 4), &[]);
    assert_eq!(c, 0, "{o}{e}");
    let mut chunked = sets(&two, 2);
    chunked.push("train.loss_chunk_tokens=5".into());
    let (c, o, e) = train(recipe, &chunked, &["--nproc", "2"]);
    assert_eq!(c, 0, "{o}{e}");
    let diff = params_diff(&one, &two, 3);
    assert!(diff <= 1e-5, "parameters differ by {diff}");
    for (a, b) in losses(&one).iter().zip(losses(&two)) {
        assert!((a - b).abs() < 1e-5, "loss {a} vs {b}");
    }
}
