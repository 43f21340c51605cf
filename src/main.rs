//! The `pzt` binary. Only this file turns errors into messages and exit codes:
//! 0 success, 2 bad input (arguments, recipes, files), 3 a failed `--expect`, 1 anything
//! else.

mod cli;

use clap::Parser;
use cli::Failure;
use std::process::ExitCode;

/// The most characters of an error message printed (a message quoting a huge input value
/// is cut, not printed whole).
const MAX_MESSAGE: usize = 4000;

/// How long an idle OpenMP worker spins before it sleeps (`GOMP_SPINCOUNT`) in `pzt train` and
/// `pzt eval` unless the user chose (`GOMP_SPINCOUNT` or `OMP_WAIT_POLICY`). libgomp's own
/// default, 300000, made training 3 to 8 times slower when another process took one of two
/// cores; 10000 costs about 2 % idle and is 1.3 to 3 times faster than it on such a busy
/// machine (benches/README.md).
const SPIN_COUNT: &str = "10000";

/// libgomp reads its settings when it is loaded, before `main`: to change its default, `train`
/// and `eval` run themselves again (same process, same arguments) with `GOMP_SPINCOUNT` set.
/// Nothing happens if the environment already chooses, or if the exec fails.
fn spin_less() {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let (Some(argv0), Some(cmd)) = (args.next(), args.next()) else {
        return;
    };
    if !(cmd == "train" || cmd == "eval")
        || std::env::var_os("GOMP_SPINCOUNT").is_some()
        || std::env::var_os("OMP_WAIT_POLICY").is_some()
    {
        return;
    }
    let _ = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .arg(cmd)
        .args(args)
        .env("GOMP_SPINCOUNT", SPIN_COUNT)
        .exec();
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`pzt show ... | head`), like other command-line tools,
    // instead of panicking in println!. A training run outlives its output instead
    // (`pzt train | head -1` trains on, checkpoints and releases its lock): it prints through
    // `pzt::base::text::out`, which drops what a closed pipe cannot take.
    let training = std::env::args_os().nth(1).is_some_and(|c| c == "train");
    // SAFETY: setting a signal disposition at start-up, before any threads.
    unsafe {
        libc::signal(
            libc::SIGPIPE,
            if training {
                libc::SIG_IGN
            } else {
                libc::SIG_DFL
            },
        );
    }
    spin_less();
    // libtorch's profiler (`train --profile`) logs its start-up stages and, on a machine
    // without a GPU, a CUDA error line; keep it quiet unless the user asked for its log.
    if std::env::var_os("KINETO_LOG_LEVEL").is_none() {
        std::env::set_var("KINETO_LOG_LEVEL", "5");
    }
    let parsed = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli::run(parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(m)) => {
            eprintln!("error: {}", pzt::base::text::clip(&m, MAX_MESSAGE));
            ExitCode::from(2)
        }
        Err(Failure::Rendered(m)) => {
            eprint!("{m}");
            ExitCode::from(2)
        }
        Err(Failure::Expectation(m)) => {
            eprintln!("error: {}", pzt::base::text::clip(&m, MAX_MESSAGE));
            ExitCode::from(3)
        }
        Err(Failure::Run(m)) => {
            eprintln!("error: {}", pzt::base::text::clip(&m, MAX_MESSAGE));
            ExitCode::from(1)
        }
        Err(Failure::Exit(code)) => ExitCode::from(code),
    }
}
