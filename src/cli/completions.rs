//! `pzt completions SHELL`: the shell's completion script for pzt, on standard output.

use super::Failure;

/// Print a completion script for bash, zsh, fish, elvish or PowerShell (e.g.
/// `pzt completions bash > ~/.local/share/bash-completion/completions/pzt`).
#[derive(clap::Args)]
pub struct Args {
    /// The shell.
    shell: clap_complete::Shell,
}

pub fn run(a: Args) -> Result<(), Failure> {
    use clap::CommandFactory;
    // Hidden commands (the reference generator) are not offered.
    let full = super::Cli::command();
    let mut cmd = clap::Command::new("pzt")
        .disable_version_flag(true)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "pzt", &mut out);
    pzt::base::text::out(String::from_utf8_lossy(&out).trim_end());
    Ok(())
}
