//! The `pzt` command line: the top of the crate, one file per command. It builds the registry
//! of built-in kinds, reads recipes, hands the library a stop signal, and turns the library's
//! errors into messages and exit codes (in `main`). The library never depends on clap.

mod capture;
pub mod common;
mod completions;
mod data;
mod demo;
mod eval;
mod export;
mod generate;
mod init;
mod input;
mod isolate;
mod launch;
mod logits;
mod plan;
mod reference;
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
    #[command(
        after_help = "Example:\n  pzt init runs/my-lora.toml --model tests/fixtures/hf/chat-tiny --data tests/fixtures/chat.jsonl"
    )]
    Init(init::Args),
    #[command(after_help = "Example:\n  pzt plan recipes/quickstart.toml")]
    Plan(plan::Args),
    #[command(after_help = "Example:\n  pzt show tests/fixtures/hf/chat-tiny --depth 2")]
    Show(show::Args),
    #[command(after_help = "Example:\n  pzt select recipes/quickstart.toml 'Attention'")]
    Select(select::Args),
    #[command(after_help = "Example:\n  pzt data recipes/lora-chat.toml --show 1")]
    Data(data::Args),
    #[command(
        after_help = "Example:\n  pzt train recipes/quickstart.toml --set 'run.name=\"cli\"' --set train.steps=100"
    )]
    Train(train::Args),
    #[command(
        after_help = "Example:\n  pzt eval recipes/quickstart.toml --set 'run.name=\"cli\"' --expect 'eval.loss<5'"
    )]
    Eval(eval::Args),
    #[command(after_help = "Example:\n  pzt runs")]
    Runs(runs::Args),
    #[command(after_help = "Example:\n  pzt report runs/cli --html runs/cli-report.html")]
    Report(report::Args),
    #[command(after_help = "Example:\n  pzt verify runs/cli")]
    Verify(verify::Args),
    #[command(after_help = "Example:\n  pzt logits runs/cli --text '12+34='")]
    Logits(logits::Args),
    #[command(
        after_help = "Example:\n  pzt generate runs/cli@latest --prompt '12+34=' --max-new-tokens 3"
    )]
    Generate(generate::Args),
    #[command(
        after_help = "Example:\n  pzt export tests/fixtures/hf/chat-tiny --hf runs/chat-tiny-bf16 --dtype bfloat16"
    )]
    Export(export::Args),
    #[command(
        after_help = "Example:\n  pzt capture tests/fixtures/hf/chat-tiny --select 'blocks.0.attention' --text 'hello' --out runs/capture.safetensors --html runs/capture.html"
    )]
    Capture(capture::Args),
    #[command(
        after_help = "Example:\n  pzt isolate tests/fixtures/hf/chat-tiny --select blocks.1.attention --text 'hello world' --out runs/iso"
    )]
    Isolate(isolate::IsolateArgs),
    #[command(after_help = "Example:\n  pzt replay runs/iso")]
    Replay(isolate::ReplayArgs),
    #[command(after_help = "Example:\n  pzt demo xor")]
    Demo(demo::Args),
    #[command(after_help = "Example:\n  pzt completions bash")]
    Completions(completions::Args),
    #[command(hide = true)]
    CliReference(reference::Args),
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
        Some(Command::Init(a)) => init::run(a),
        Some(Command::Completions(a)) => completions::run(a),
        Some(Command::CliReference(a)) => reference::run(a),
    }
}
