//! `pzt train RECIPE [--set KEY=VALUE]... [--resume] [--json] [--profile TRACE.json]
//! [--nproc N]`.

use super::common::{check_outputs, deterministic_cublas, lib_err, print_metrics, Failure};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Train the model of a recipe (resumes from the newest checkpoint of its run directory).
#[derive(clap::Args)]
pub struct Args {
    /// The recipe file.
    recipe: PathBuf,
    /// Override a recipe key: KEY.PATH=VALUE.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Resume from the newest complete checkpoint (the default whenever one exists).
    #[arg(long)]
    resume: bool,
    /// Print the final summary as JSON (and nothing else on stdout).
    #[arg(long)]
    json: bool,
    /// Profile steps with libtorch's operator profiler: write a Chrome trace (Perfetto,
    /// chrome://tracing) to this file and print the operators by self time on stderr.
    #[arg(long, value_name = "TRACE.json")]
    profile: Option<PathBuf>,
    /// How many steps to profile (after the first, which warms up).
    #[arg(long, value_name = "N", default_value_t = 3, requires = "profile")]
    profile_steps: u64,
    /// Data-parallel training on N local processes (ranks 0..N-1, Gloo on the CPU or NCCL on
    /// GPUs): the global batch is N x batch_size x grad_accum.
    #[arg(long, value_name = "N")]
    nproc: Option<u64>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    check_profile_args(&a)?;
    let r = pzt::recipe::Recipe::load(&a.recipe, &a.set).map_err(lib_err)?;
    check_outputs(
        &pzt::base::outputs::Outputs::new()
            .inputs(r.input_paths())
            .output_opt("--profile", a.profile.as_ref()),
    )?;
    if let Some(n) = a.nproc {
        if launch_ranks(&r, n)? {
            return Ok(());
        }
    }
    // Rank 0 speaks for a data-parallel run (and a launcher for its ranks).
    let speaks =
        a.nproc.is_none_or(|n| n <= 1) && std::env::var("RANK").map_or(true, |r| r.trim() == "0");
    if a.resume && speaks && pzt::run::checkpoint::latest(&r.run.out_dir).is_none() && !a.json {
        pzt::base::text::out(&format!(
            "--resume: no checkpoint in {} yet; starting from step 0",
            r.run.out_dir.display()
        ));
    }
    let stop = stop_on_signal();
    let opts = pzt::train::TrainOptions {
        progress: std::io::stdout().is_terminal() && !a.json,
        quiet: a.json,
        profile: a.profile.clone().map(|trace| pzt::train::ProfileOptions {
            trace,
            steps: a.profile_steps,
        }),
    };
    let spec = r.train_spec(&pzt::builtin_registry()).map_err(lib_err)?;
    if a.profile.is_some() {
        check_not_finished(&r, &spec)?;
    }
    deterministic_cublas(&spec);
    let s = pzt::train::train(spec, &opts, &stop).map_err(|e| lib_err(r.locate(e)))?;
    if s.rank > 0 {
        // Rank 0 speaks for the run.
        return if s.interrupted {
            Err(Failure::Exit(1))
        } else {
            Ok(())
        };
    }
    if let Some(p) = &s.profile {
        eprintln!("{p}");
    }
    if a.json {
        pzt::base::text::out(&serde_json::to_string_pretty(&s.to_json()).unwrap_or_default());
    } else {
        print_summary(&s);
    }
    if s.interrupted {
        let ck = s
            .checkpoint
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        return Err(Failure::Run(format!(
            "interrupted at step {}; checkpoint written to {ck}; run the same command to resume",
            s.steps
        )));
    }
    Ok(())
}

/// Checks `--profile` and `--profile-steps`: the trace file may be written, and the number of
/// steps is 1 to 1,000,000.
fn check_profile_args(a: &Args) -> Result<(), Failure> {
    if let Some(p) = &a.profile {
        check_outputs(&pzt::base::outputs::Outputs::new().output("--profile", p))?;
        if a.profile_steps == 0 || a.profile_steps > 1_000_000 {
            return Err(Failure::BadInput(format!(
                "--profile-steps {}: give 1 to 1000000 steps",
                a.profile_steps
            )));
        }
    }
    Ok(())
}

/// Checks `--nproc N` and, for more than one process, launches the ranks and returns true
/// (after they have run); returns false when this process is to train alone.
fn launch_ranks(r: &pzt::recipe::Recipe, n: u64) -> Result<bool, Failure> {
    // Mistakes are found here once, before any rank starts.
    let spec = r.train_spec(&pzt::builtin_registry()).map_err(lib_err)?;
    let max = super::launch::MAX_NPROC;
    let n = match usize::try_from(n) {
        Ok(n) if (1..=max).contains(&n) => n,
        _ => {
            return Err(Failure::BadInput(format!(
                "--nproc {n}: give 1 to {max} processes"
            )))
        }
    };
    if n > 1 {
        check_world(&r.run.out_dir, n)?;
        super::launch::launch(n, spec.train.distributed_timeout_s, &r.run.out_dir)?;
        return Ok(true);
    }
    Ok(false)
}

/// Installs the Ctrl-C / SIGTERM handler and returns the flag it raises.
fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // The first Ctrl-C or SIGTERM stops after the current step, with a checkpoint; a second
    // one exits at once (the checkpoints already written stay intact). A second signal within
    // a second of the first is the same request delivered twice: `timeout` and other
    // launchers signal the process and then its process group.
    let first = std::sync::Mutex::new(None::<std::time::Instant>);
    let _ = ctrlc::set_handler(move || {
        // Preparing the data has no step to finish: it stops at once.
        pzt::base::interrupt::request();
        let mut at = first.lock().unwrap_or_else(|e| e.into_inner());
        match *at {
            None => {
                *at = Some(std::time::Instant::now());
                flag.store(true, Ordering::SeqCst);
            }
            Some(t) if t.elapsed() < std::time::Duration::from_secs(1) => {}
            Some(_) => {
                eprintln!("\nerror: stopped again: exiting now, without a checkpoint of this step");
                // At once: running exit handlers while the step's threads still compute can
                // crash the process instead of exiting with 1.
                // SAFETY: _exit ends the process; nothing of it is used afterwards.
                unsafe { libc::_exit(1) };
            }
        }
    });
    stop
}

/// `--profile` needs a step to profile: refuses a run whose newest checkpoint is already at
/// its last step.
fn check_not_finished(r: &pzt::recipe::Recipe, spec: &pzt::spec::RunSpec) -> Result<(), Failure> {
    if let Some((s, _)) = pzt::run::checkpoint::latest(&r.run.out_dir) {
        if s >= spec.train.steps {
            return Err(Failure::BadInput(format!(
                "--profile: the run in {} is finished (step {s} of {}): there is no step to profile; raise train.steps, or profile a new run (--set 'run.name=\"{}-profile\"')",
                r.run.out_dir.display(),
                spec.train.steps,
                r.run.name
            )));
        }
    }
    Ok(())
}

/// Prints the end-of-run summary: steps, device, time, final loss, evaluation metrics and
/// where the checkpoint, metrics and TensorBoard logs are.
fn print_summary(s: &pzt::train::Summary) {
    let ck = s
        .checkpoint
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "none".into());
    pzt::base::text::out(&format!(
        "done: `{}` step {}/{} on {} in {:.1} s; final loss {}",
        s.name,
        s.steps,
        s.total_steps,
        s.device,
        s.elapsed_s,
        s.final_loss
            .map(|l| format!("{l:.4}"))
            .unwrap_or_else(|| "-".into())
    ));
    print_metrics(&s.eval);
    pzt::base::text::out(&format!("  checkpoint           {ck}"));
    pzt::base::text::out(&format!(
        "  metrics              {}",
        s.out_dir.join("metrics.jsonl").display()
    ));
    pzt::base::text::out(&format!(
        "  tensorboard          {}",
        s.out_dir.join("tensorboard").display()
    ));
}

/// A run directory whose newest checkpoint was written on another number of processes is
/// refused before any rank starts.
fn check_world(out_dir: &std::path::Path, n: usize) -> Result<(), Failure> {
    let Some((_, dir)) = pzt::run::checkpoint::latest(out_dir) else {
        return Ok(());
    };
    let Ok(text) = std::fs::read_to_string(dir.join("state.json")) else {
        return Ok(()); // the ranks read it, and say what is wrong with it
    };
    let had = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("world_size").and_then(|w| w.as_u64()))
        .unwrap_or(1);
    if had != n as u64 {
        return Err(Failure::BadInput(format!(
            "{} was written by a run on {had} process(es); resume it with --nproc {had} (or train into another out_dir)",
            dir.display()
        )));
    }
    Ok(())
}
