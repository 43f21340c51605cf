//! `pzt train RECIPE --nproc N`: a local launcher, like `torchrun --nproc-per-node N`. It hosts
//! the rendezvous store on a free loopback port, starts N copies of this command as ranks
//! 0..N-1 (with torchrun's environment), passes Ctrl-C and SIGTERM on to them, and waits. When a
//! rank fails, the launcher names it, gives the others a moment to stop on their own (their
//! collectives fail as soon as a peer's connections close), then kills what is left.

use super::common::Failure;
use pzt::backend::dist::Store;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most local ranks `--nproc` starts.
pub const MAX_NPROC: usize = 1024;

/// How long the other ranks get to stop by themselves after one failed.
const GRACE: Duration = Duration::from_secs(20);

/// The command line of one rank: this one without `--nproc N`.
fn rank_args() -> Vec<String> {
    let mut out = vec![];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--nproc" {
            args.next();
        } else if !a.starts_with("--nproc=") {
            out.push(a);
        }
    }
    out
}

fn describe(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}{}", signal_name(sig)),
        _ => "ended".into(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        _ => "",
    }
}

fn signal_all(children: &[Option<Child>], sig: i32) {
    for c in children.iter().flatten() {
        // SAFETY: sending a signal to a child process this launcher started and has not reaped.
        unsafe {
            libc::kill(c.id() as libc::pid_t, sig);
        }
    }
}

/// Threads per rank: the machine's cores shared out, unless the user chose
/// (`OMP_NUM_THREADS`, or `[train] threads`, which each rank applies itself).
fn threads_per_rank(n: usize) -> Option<String> {
    if std::env::var_os("OMP_NUM_THREADS").is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    Some((cores / n).max(1).to_string())
}

/// The command of rank `rank` of `n`: this `pzt train` with torchrun's environment, in its own
/// process group, stopped by SIGTERM should the launcher (process `launcher`) die.
fn rank_command(
    exe: &std::path::Path,
    rank: usize,
    n: usize,
    port: &str,
    threads: Option<&str>,
    launcher: u32,
) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(rank_args())
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", n.to_string())
        .env("LOCAL_WORLD_SIZE", n.to_string())
        .env("GROUP_RANK", "0")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port)
        .env("TORCHELASTIC_USE_AGENT_STORE", "True")
        .env("TORCHELASTIC_RESTART_COUNT", "0")
        .stdin(Stdio::null());
    if let Some(t) = threads {
        cmd.env("OMP_NUM_THREADS", t);
    }
    if rank > 0 {
        cmd.stdout(Stdio::null());
    }
    // The ranks get signals from the launcher alone (a terminal's Ctrl-C reaches it, and
    // it passes it on once), and SIGTERM should the launcher die.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // SAFETY: prctl in the child between fork and exec, async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            // The launcher died before the line above: do not start an orphan.
            if libc::getppid() as u32 != launcher {
                return Err(std::io::Error::other("the launcher has exited"));
            }
            Ok(())
        });
    }
    cmd
}

/// Starts `n` ranks of this `pzt train` and waits for them; the exit is 2 when a rank found bad
/// input, else the first failing rank's (0 when all succeed).
pub fn launch(n: usize, timeout_s: u64, out_dir: &std::path::Path) -> Result<(), Failure> {
    if n == 0 || n > MAX_NPROC {
        return Err(Failure::BadInput(format!(
            "--nproc {n}: give 1 to {MAX_NPROC} processes"
        )));
    }
    if std::env::var_os("RANK").is_some() || std::env::var_os("WORLD_SIZE").is_some() {
        return Err(Failure::BadInput(
            "--nproc starts its own ranks, but RANK/WORLD_SIZE are already set (this is a launched rank); drop --nproc under torchrun or another launcher".into(),
        ));
    }
    let exe = std::env::current_exe()
        .map_err(|e| Failure::Run(format!("--nproc: cannot find this program ({e})")))?;
    let timeout = Duration::from_secs(timeout_s);
    let store = Store::new("127.0.0.1", 0, true, timeout, "")
        .map_err(|e| Failure::Run(format!("--nproc: could not start the store: {e}")))?;
    let port = store.port().to_string();
    let signals = Arc::new(AtomicUsize::new(0));
    let seen = signals.clone();
    let _ = ctrlc::set_handler(move || {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    let threads = threads_per_rank(n);
    let launcher = std::process::id();
    let mut children: Vec<Option<Child>> = vec![];
    for rank in 0..n {
        let mut cmd = rank_command(&exe, rank, n, &port, threads.as_deref(), launcher);
        match cmd.spawn() {
            Ok(c) => children.push(Some(c)),
            Err(e) => {
                signal_all(&children, libc::SIGKILL);
                return Err(Failure::Run(format!(
                    "--nproc: could not start rank {rank}: {e}"
                )));
            }
        }
    }
    let r = wait_all(children, &signals);
    // A rank that failed on bad input (exit 2) said what to change: running it again would
    // fail the same way.
    let bad_input = matches!(r, Err(Failure::Exit(2)));
    if r.is_err() && !bad_input && signals.load(Ordering::SeqCst) == 0 {
        let newest = pzt::run::checkpoint::latest(out_dir).map_or_else(
            || "no checkpoint yet".to_string(),
            |(s, p)| format!("the newest checkpoint is {} (step {s})", p.display()),
        );
        eprintln!("error: the run stopped; {newest}; run the same command to resume");
    }
    r
}

/// Waits for every rank, passing signals on and stopping the rest when one fails.
fn wait_all(mut children: Vec<Option<Child>>, signals: &AtomicUsize) -> Result<(), Failure> {
    let mut passed = 0;
    let mut first_failure: Option<(usize, ExitStatus)> = None;
    // A rank that exits 2 found bad input; the others may exit 1 first, on losing it.
    let mut bad_input = false;
    let mut deadline: Option<Instant> = None;
    loop {
        let s = signals.load(Ordering::SeqCst);
        while passed < s {
            signal_all(&children, libc::SIGTERM);
            passed += 1;
        }
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(c) = slot else { continue };
            match c.try_wait() {
                Ok(Some(status)) => {
                    *slot = None;
                    bad_input |= status.code() == Some(2);
                    if !status.success() && first_failure.is_none() {
                        first_failure = Some((rank, status));
                        // After a stop request, ranks exit 1 as they stop (rank 0 last, once
                        // its checkpoint is written): nothing to cut short.
                        if passed == 0 {
                            eprintln!(
                                "error: rank {rank} {}; stopping the other ranks",
                                describe(status)
                            );
                            deadline = Some(Instant::now() + GRACE);
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("error: rank {rank}: cannot wait for it ({e}); stopping the ranks");
                    let _ = c.kill();
                    *slot = None;
                    if first_failure.is_none() {
                        first_failure = Some((rank, ExitStatus::from_raw(1 << 8)));
                        deadline = Some(Instant::now() + GRACE);
                    }
                }
            }
        }
        if children.iter().all(Option::is_none) {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            signal_all(&children, libc::SIGKILL);
            deadline = None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match first_failure {
        None => Ok(()),
        Some(_) if bad_input => Err(Failure::Exit(2)),
        Some((_, status)) => {
            let code = status.code().unwrap_or(1).clamp(1, 255);
            Err(Failure::Exit(code as u8))
        }
    }
}
