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

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`pzt show ... | head`), like other command-line tools,
    // instead of panicking in println!.
    // SAFETY: setting a signal disposition to its default at start-up, before any threads.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    pzt::base::memory::tune_allocator();
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
    }
}
