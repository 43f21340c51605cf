//! The `pzt` command line: the top of the crate, one file per command. It builds the registry
//! of built-in kinds, reads recipes, hands the library a stop signal, and turns the library's
//! errors into messages and exit codes (in `main`). The library never depends on clap.

mod capture;
pub mod common;
mod data;
mod demo;
mod eval;
mod export;
mod generate;
mod input;
mod isolate;
mod launch;
mod logits;
mod plan;
mod report;
mod runs;
mod select;
mod show;
mod train;
mod verify;

use clap::{Parser, Subcommand};
pub use common::Failure;
use pzt::backend;

#[derive(Parser)]
#[command(
    name = "pzt",
    about = "Named-axis models, selectors and model surgery on libtorch",
    disable_version_flag = true
)]
pub struct Cli {
    /// Print the pzt version, the libtorch version and the devices libtorch sees.
    #[arg(short = 'V', long = "version")]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    Plan(plan::Args),
    Show(show::Args),
    Select(select::Args),
    Capture(capture::Args),
    Isolate(isolate::IsolateArgs),
    Replay(isolate::ReplayArgs),
    Train(train::Args),
    Eval(eval::Args),
    Logits(logits::Args),
    Generate(generate::Args),
    Export(export::Args),
    Data(data::Args),
    Verify(verify::Args),
    Runs(runs::Args),
    Report(report::Args),
    Demo(demo::Args),
}

fn print_version() {
    println!("pzt {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch {}", backend::torch_version());
    let devs: Vec<String> = backend::devices()
        .into_iter()
        .map(backend::device_name)
        .collect();
    println!("devices: {}", devs.join(", "));
    println!(
        "default device: {}",
        backend::device_name(backend::auto_device())
    );
}

/// Runs the command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    if cli.version {
        print_version();
        return Ok(());
    }
    match cli.command {
        None => {
            print_version();
            println!("\nrun `pzt --help` for the commands");
            Ok(())
        }
        Some(Command::Plan(a)) => plan::run(a),
        Some(Command::Show(a)) => show::run(a),
        Some(Command::Select(a)) => select::run(a),
        Some(Command::Capture(a)) => capture::run(a),
        Some(Command::Isolate(a)) => isolate::isolate(a),
        Some(Command::Replay(a)) => isolate::replay(a),
        Some(Command::Train(a)) => train::run(a),
        Some(Command::Eval(a)) => eval::run(a),
        Some(Command::Logits(a)) => logits::run(a),
        Some(Command::Generate(a)) => generate::run(a),
        Some(Command::Export(a)) => export::run(a),
        Some(Command::Data(a)) => data::run(a),
        Some(Command::Verify(a)) => verify::run(a),
        Some(Command::Runs(a)) => runs::run(a),
        Some(Command::Report(a)) => report::run(a),
        Some(Command::Demo(a)) => demo::run(a),
    }
}
