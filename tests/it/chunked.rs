//! The chunked loss (`[train] loss_chunk_tokens`): a language model's loss, its gradients and
//! a preference objective's run the same with the token head applied a few tokens at a time as
//! with the whole logits, for frozen heads (the gradient computed in the forward) and trainable
//! ones (recomputed in backward), with label masks, packing, tied heads, soft-capping, logit
//! scales and head biases; generation runs the head on the last position only.
use crate::common::dist::{losses, params};
use crate::common::*;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One case: a model fixture, the `[data]` lines, and the `[strategy]` tables.
struct Case {
    name: &'static str,
    model: &'static str,
    data: String,
    /// The `[strategy]` (and `[objective]`) tables.
    strategy: String,
}

fn text_data(pack: bool) -> String {
    format!(
        "source = \"text\"\nfiles = [\"{}\"]\ntokenizer = \"{}\"\nseq_len = 24\npack = {pack}\neval_fraction = 0.25\n",
        fixtures().join("tiny.txt").display(),
        fixtures().join("hf/qlora-tiny/tokenizer.json").display(),
    )
}

fn chat_data() -> String {
    format!(
        "source = \"chat\"\nfiles = [\"{}\"]\nseq_len = 96\neval_fraction = 0.1\n",
        fixtures().join("chat.jsonl").display()
    )
}

const LORA: &str = "[strategy]\nkind = \"lora\"\n[strategy.lora]\ntargets = [\"q_proj\", \"v_proj\", \"down_proj\"]\nrank = 4\nalpha = 8.0\n";
const LORA_HEAD: &str = "[strategy]\nkind = \"lora\"\n[strategy.lora]\ntargets = [\"q_proj\", \"v_proj\", \"lm_head\"]\nrank = 4\nalpha = 8.0\n";

/// Trains `case` for 2 SGD steps (learning rate 1, so a step's change is the gradient) with
/// `chunk` tokens per chunk of the loss; returns the run directory.
fn train(d: &Path, case: &Case, chunk: usize, precision: &str) -> PathBuf {
    let name = format!("{}-{chunk}-{precision}", case.name);
    let out = d.join(&name);
    let f = d.join(format!("{name}.toml"));
    std::fs::write(
        &f,
        format!(
            "[run]\nname = \"{name}\"\nout_dir = \"{out}\"\n[model]\nhf = \"{m}\"\n[data]\n{data}{strategy}[train]\nsteps = 2\nbatch_size = 4\nlog_every = 1\neval_every = 2\neval_generate = 2\nthreads = 1\nprecision = \"{precision}\"\nloss_chunk_tokens = {chunk}\n[optim]\nkind = \"sgd\"\nlr = 1.0\nweight_decay = 0.0\n[checkpoint]\nevery_steps = 1\n",
            out = out.display(),
            m = fixtures().join("hf").join(case.model).display(),
            data = case.data,
            strategy = case.strategy,
        ),
    )
    .unwrap();
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{}: {o}{e}", case.name);
    out
}

fn metrics(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The largest relative difference of the two runs' losses, gradient norms and eval metrics,
/// and of their parameters after each step (what SGD at learning rate 1 moved them by).
fn compare(a: &Path, b: &Path) -> (f64, f64) {
    let (ma, mb) = (metrics(a), metrics(b));
    assert_eq!(ma.len(), mb.len());
    let mut worst: f64 = 0.0;
    for (x, y) in ma.iter().zip(&mb) {
        for k in ["loss", "grad_norm", "eval.loss", "eval.token_accuracy"] {
            if let (Some(p), Some(q)) = (x.get(k).and_then(|v| v.as_f64()), y.get(k)) {
                let q = q.as_f64().unwrap();
                worst = worst.max((p - q).abs() / p.abs().max(1e-12));
            }
        }
        assert_eq!(
            x.get("eval.exact_match"),
            y.get("eval.exact_match"),
            "greedy completions differ"
        );
    }
    let mut moved: f64 = 0.0;
    for step in [1, 2] {
        for ((n, ta), (_, tb)) in params(a, step).iter().zip(&params(b, step)) {
            let scale = ta.abs().max().double_value(&[]).max(1e-3);
            let d = max_abs_diff(ta, tb) / scale;
            assert!(d.is_finite(), "{n}");
            moved = moved.max(d);
        }
    }
    (worst, moved)
}

fn cases() -> Vec<Case> {
    vec![
        // Chat data: the loss only on the assistant turns; a frozen untied head.
        Case {
            name: "chat-lora",
            model: "chat-tiny",
            data: chat_data(),
            strategy: LORA.into(),
        },
        // Adapters on the head: recomputed in backward.
        Case {
            name: "chat-lora-head",
            model: "chat-tiny",
            data: chat_data(),
            strategy: LORA_HEAD.into(),
        },
        // Full fine-tuning of a tied head with a final soft-cap, on packed windows.
        Case {
            name: "gemma2-full-packed",
            model: "gemma2",
            data: text_data(true),
            strategy: String::new(),
        },
        // A logit scale after the head.
        Case {
            name: "granite-lora",
            model: "granite",
            data: text_data(false),
            strategy: LORA.into(),
        },
        // A head bias, trained in full.
        Case {
            name: "phi-full",
            model: "phi",
            data: text_data(false),
            strategy: String::new(),
        },
    ]
}

#[test]
fn the_chunked_loss_equals_the_whole_logits_loss() {
    let d = tmpdir("chunked", "equal");
    for case in cases() {
        let whole = train(&d, &case, 1_000_000, "fp32");
        let chunked = train(&d, &case, 5, "fp32");
        let (metrics, params) = compare(&whole, &chunked);
        assert!(
            metrics < 1e-6,
            "{}: metrics differ by {metrics:e}",
            case.name
        );
        assert!(
            params < 1e-5,
            "{}: parameters differ by {params:e}",
            case.name
        );
        assert!(losses(&whole).iter().all(|l| l.is_finite() && *l > 0.0));
    }
}

/// Under bfloat16 autocast the head's products round differently in chunks: the runs agree
/// to bfloat16's precision.
#[test]
fn the_chunked_loss_under_bf16_agrees_to_its_precision() {
    let d = tmpdir("chunked", "bf16");
    for case in cases().into_iter().take(2) {
        let whole = train(&d, &case, 1_000_000, "bf16");
        let chunked = train(&d, &case, 5, "bf16");
        let (metrics, _) = compare(&whole, &chunked);
        assert!(
            metrics < 2e-2,
            "{}: metrics differ by {metrics:e}",
            case.name
        );
    }
}

/// DPO (the reference with the adapters off) and ORPO (whose loss adds the chosen
/// completions' negative log-likelihood) in chunks of 7 tokens equal the whole logits' runs.
#[test]
fn preference_objectives_in_chunks_equal_the_whole_logits() {
    let d = tmpdir("chunked", "preference");
    for (name, objective, strategy) in [
        ("dpo", "dpo", LORA),
        ("orpo", "orpo", LORA),
        ("dpo-head", "dpo", LORA_HEAD),
    ] {
        let case = Case {
            name,
            model: "chat-tiny",
            data: format!(
                "source = \"preference\"\nfiles = [\"{}\"]\nseq_len = 128\neval_fraction = 0.25\n",
                fixtures().join("preference/conversational.jsonl").display()
            ),
            strategy: format!("{strategy}[objective]\nkind = \"{objective}\"\n"),
        };
        let whole = train(&d, &case, 1_000_000, "fp32");
        let chunked = train(&d, &case, 7, "fp32");
        let (metrics, params) = compare(&whole, &chunked);
        assert!(metrics < 1e-6, "{objective}: metrics differ by {metrics:e}");
        assert!(
            params < 1e-5,
            "{objective}: parameters differ by {params:e}"
        );
        let _ = std::fs::remove_dir_all(&whole);
    }
}
