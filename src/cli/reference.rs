//! `pzt cli-reference` (hidden): docs/cli.md, the reference of every command and flag, written
//! from the clap definitions themselves, so that it cannot drift from what `pzt --help` says
//! (`tests/it/cli.rs` fails when the committed file differs from this output).

use super::Failure;
use clap::{Arg, ArgAction, Command};

/// Print the command-line reference (docs/cli.md) as Markdown.
#[derive(clap::Args)]
pub struct Args {}

/// What a flag or argument takes, as `--set <KEY=VALUE>` or `<RECIPE>`.
fn arg_name(a: &Arg) -> String {
    let value = a
        .get_value_names()
        .map(|v| {
            v.iter()
                .map(|n| format!("<{n}>"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| format!("<{}>", a.get_id().as_str().to_uppercase()));
    let takes_value = !matches!(
        a.get_action(),
        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count | ArgAction::Help
    );
    match (a.get_long(), a.get_short()) {
        (Some(l), _) if takes_value => format!("--{l} {value}"),
        (Some(l), _) => format!("--{l}"),
        (None, Some(s)) if takes_value => format!("-{s} {value}"),
        (None, Some(s)) => format!("-{s}"),
        (None, None) => value,
    }
}

/// The description of an argument: its help, what it accepts, its default, whether it repeats.
fn arg_text(a: &Arg) -> String {
    let text = a
        .get_long_help()
        .or(a.get_help())
        .map(|h| h.to_string().replace('\n', " "))
        .unwrap_or_else(|| "(no description)".into());
    let mut text = text.trim_end().to_string();
    if !text.ends_with(['.', ')', '!', '?']) {
        text.push('.');
    }
    let values: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if !values.is_empty() && a.get_long().is_some() {
        text.push_str(&format!(" One of {}.", values.join(", ")));
    }
    let defaults: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let flag = matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
    if !defaults.is_empty() && !flag {
        text.push_str(&format!(" Default: `{}`.", defaults.join(" ")));
    }
    if matches!(a.get_action(), ArgAction::Append) {
        text.push_str(" Repeatable.");
    }
    if let Some(aliases) = a.get_visible_aliases() {
        let shown: Vec<String> = aliases.iter().map(|x| format!("`--{x}`")).collect();
        text.push_str(&format!(" Also {}.", shown.join(", ")));
    }
    text.replace('|', "\\|")
}

/// The example lines of a command's after-help (`Example:` followed by indented commands).
pub fn examples(c: &Command) -> Vec<String> {
    let help = c
        .get_after_help()
        .map(|h| h.to_string())
        .unwrap_or_default();
    help.lines()
        .skip_while(|l| !l.trim_start().starts_with("Example"))
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn section(out: &mut String, c: &mut Command, path: &str) {
    let about = c
        .get_long_about()
        .or(c.get_about())
        .map(|a| a.to_string())
        .unwrap_or_default();
    out.push_str(&format!("## `{path}`\n\n{about}\n\n"));
    let usage = c.render_usage().to_string();
    out.push_str(&format!("```text\n{}\n```\n\n", usage.trim()));
    let args: Vec<&Arg> = c
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "help")
        .collect();
    if !args.is_empty() {
        out.push_str("| argument | what it does |\n|---|---|\n");
        for a in args {
            out.push_str(&format!("| `{}` | {} |\n", arg_name(a), arg_text(a)));
        }
        out.push('\n');
    }
    let ex = examples(c);
    if !ex.is_empty() {
        out.push_str("```console\n");
        for e in ex {
            out.push_str(&format!("$ {e}\n"));
        }
        out.push_str("```\n\n");
    }
}

/// docs/cli.md.
pub fn markdown(mut cli: Command) -> String {
    let mut out = String::from(
        "# Command-line reference\n\nEvery command and flag of `pzt`, written from the command line's own definitions (the\nsame text as `pzt COMMAND --help`); `tests/it/cli.rs` fails when this page is stale. Each command's\nexample runs in `tests/it/docs.rs`, in order, from the root of a copy of the repository.\n\n",
    );
    out.push_str("| command | what it does |\n|---|---|\n");
    for c in cli
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
    {
        let about = c.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.push_str(&format!(
            "| [`pzt {}`](#pzt-{}) | {} |\n",
            c.get_name(),
            c.get_name(),
            about.replace('|', "\\|")
        ));
    }
    out.push('\n');
    cli.build();
    let names: Vec<String> = cli
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .map(|c| c.get_name().to_string())
        .collect();
    for name in names {
        if let Some(c) = cli.find_subcommand_mut(&name) {
            let mut c = c.clone();
            let subs: Vec<String> = c
                .get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
                .map(|s| s.get_name().to_string())
                .collect();
            section(&mut out, &mut c, &format!("pzt {name}"));
            for s in subs {
                if let Some(sc) = c.find_subcommand_mut(&s) {
                    let mut sc = sc.clone();
                    section(&mut out, &mut sc, &format!("pzt {name} {s}"));
                }
            }
        }
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

pub fn run(_: Args) -> Result<(), Failure> {
    use clap::CommandFactory;
    print!("{}", markdown(super::Cli::command()));
    Ok(())
}
