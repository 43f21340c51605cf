//! The examples of the documentation, run as a reader would run them: every `console` block of
//! README.md and docs/*.md.
//!
//! Conventions the pages follow (docs/README.md repeats them for writers):
//!
//! - A fenced block whose info string is `console` is a shell session. A line starting with `$ `
//!   is a command; a command line ending in `\` continues on the next line. The other lines are
//!   example output: they are not compared, except `error:` lines (below).
//! - The commands of one page run in order, in a fresh temporary directory that holds copies of
//!   the repository's `recipes/`, `configs/`, `examples/`, `tests/fixtures/` and `tests/golden/`
//!   (so paths written relative to the repository root work, and nothing is written into the
//!   checkout), with the `pzt` under test first on the `PATH`. Each command runs on its own with
//!   `bash -c`: quoting, pipes and globs work, shell variables do not carry over to the next
//!   command. A command may not name an absolute path (`/tmp/...`): pages write under `runs/`,
//!   which is git-ignored (and present, as in a checkout).
//! - A command runs when its program (after `VAR=value` assignments and a `timeout ...` prefix) is
//!   `pzt`, `python3` (standard library only: `make demo` installs nothing else for it to use),
//!   or one of the file commands `cat`, `cp`, `mkdir`, `rm`, `ls`, `echo`, `printf`. Anything
//!   else (`make`, `cargo`, `source`, `torchrun`, ...) is skipped. An example that needs what
//!   the test machine lacks (a GPU, several machines, a network) goes in an `sh` block, which is
//!   not run, and the page says why.
//! - A command must exit with 0, unless its line ends with the comment `# exit N`. In a pipeline
//!   (`pzt ... | head -3`) the first command's exit code counts.
//! - An example output line that starts with `error:` must be a line of what the command printed
//!   (stdout or stderr), where `...` in the page's line stands for any text. Other lines are
//!   examples: numbers differ between machines and timings between runs.
//! - A fenced block whose info string carries `file=PATH` (for instance ```` ```toml file=ft.toml
//!   ````) is written to PATH in the temporary directory, at its place among the commands, so a
//!   later command can use it.
//!
//! The pages run one at a time (a lock), each as its own test, so a failure names its page.
//! `every_page_is_run` fails when a page is added to docs/ without being listed here; pages not
//! listed (docs/cli.md, generated from the command line's definitions) run in `other_pages`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The pages with a test of their own.
const PAGES: &[&str] = &[
    "README.md",
    "docs/README.md",
    "docs/recipes.md",
    "docs/data.md",
    "docs/training.md",
    "docs/preference.md",
    "docs/strategies.md",
    "docs/pretrained.md",
    "docs/distributed.md",
    "docs/inspection.md",
    "docs/library.md",
    "docs/architecture.md",
];

/// Programs a page's commands may run; any other command is skipped.
const RUN: &[&str] = &[
    "pzt", "python3", "cat", "cp", "mkdir", "rm", "ls", "echo", "printf",
];

/// Copied into each page's directory, relative to the repository root.
const COPIED: &[&str] = &[
    "recipes",
    "configs",
    "examples",
    "tests/fixtures",
    "tests/golden",
];

/// The longest a single command may take before the test fails it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

static ONE_PAGE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Debug, PartialEq)]
enum Step {
    /// A `file=PATH` block.
    Write {
        path: String,
        text: String,
        line: usize,
    },
    /// A `$ ` command with the exit code it must give and the `error:` lines it must print.
    Run {
        command: String,
        expect: i32,
        errors: Vec<String>,
        line: usize,
    },
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Splits a page into its steps, in order.
fn parse(text: &str) -> Vec<Step> {
    let lines: Vec<&str> = text.lines().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some((indent, ticks, info)) = fence_open(lines[i]) else {
            i += 1;
            continue;
        };
        let start = i + 1;
        let mut end = start;
        while end < lines.len() && !fence_close(lines[end], ticks) {
            end += 1;
        }
        // A block inside a list item is indented like its fence: drop that indent.
        let body: Vec<&str> = lines[start..end.min(lines.len())]
            .iter()
            .map(|l| {
                let n = l.len() - l.trim_start_matches(' ').len();
                &l[n.min(indent)..]
            })
            .collect();
        let words: Vec<&str> = info.split_whitespace().collect();
        if words.first() == Some(&"console") {
            steps.extend(parse_console(&body, start + 1));
        } else if let Some(path) = words.iter().find_map(|w| w.strip_prefix("file=")) {
            let mut text = body.join("\n");
            text.push('\n');
            steps.push(Step::Write {
                path: path.to_string(),
                text,
                line: i + 1,
            });
        }
        i = end + 1;
    }
    steps
}

/// A line that opens a fenced block: its indent, the number of backticks and the info string.
fn fence_open(line: &str) -> Option<(usize, usize, &str)> {
    let t = line.trim_start_matches(' ');
    let ticks = t.len() - t.trim_start_matches('`').len();
    let info = &t[ticks..];
    (ticks >= 3 && !info.contains('`')).then_some((line.len() - t.len(), ticks, info.trim()))
}

/// Whether `line` closes a block opened with `ticks` backticks.
fn fence_close(line: &str, ticks: usize) -> bool {
    let t = line.trim();
    t.len() >= ticks && t.chars().all(|c| c == '`')
}

/// The commands of a `console` block whose first line is line `first` of the page.
fn parse_console(body: &[&str], first: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut k = 0;
    while k < body.len() {
        let Some(cmd) = body[k].strip_prefix("$ ") else {
            k += 1;
            continue;
        };
        let line = first + k;
        let mut command = cmd.to_string();
        while command.ends_with('\\') && k + 1 < body.len() {
            command.pop();
            k += 1;
            command.push_str(body[k].trim_start());
        }
        k += 1;
        let mut errors = Vec::new();
        while k < body.len() && !body[k].starts_with("$ ") {
            if body[k].starts_with("error:") {
                errors.push(body[k].to_string());
            }
            k += 1;
        }
        let expect = declared_exit(&command);
        steps.push(Step::Run {
            command,
            expect,
            errors,
            line,
        });
    }
    steps
}

/// The `# exit N` a command line ends with, else 0.
fn declared_exit(command: &str) -> i32 {
    let Some(pos) = command.rfind("# exit ") else {
        return 0;
    };
    command[pos + "# exit ".len()..]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("`# exit` needs a number: {command}"))
}

/// The program a command runs: its first word after `VAR=value` words and a `timeout` prefix.
fn program(command: &str) -> &str {
    let mut words = command.split_whitespace().peekable();
    while let Some(w) = words.peek() {
        if w.contains('=') && !w.starts_with('-') && !w.starts_with('\'') {
            words.next();
        } else {
            break;
        }
    }
    if words.peek() == Some(&"timeout") {
        words.next();
        while let Some(w) = words.peek() {
            if w.starts_with('-') {
                let takes_value = *w == "-s" || *w == "-k";
                words.next();
                if takes_value {
                    words.next();
                }
            } else {
                break;
            }
        }
        words.next(); // the duration
    }
    words.next().unwrap_or("")
}

/// Whether `line` matches `pattern`, where `...` in the pattern stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let pieces: Vec<&str> = pattern.split("...").collect();
    if pieces.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(p) => rest = &rest[p + piece.len()..],
            None => return false,
        }
    }
    true
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A fresh directory for one page: the copied folders and `bin/pzt`.
fn workdir(page: &str) -> PathBuf {
    let name = page.replace(['/', '.'], "-");
    let dir = std::env::temp_dir().join(format!("pzt-docs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in COPIED {
        copy_tree(&root().join(d), &dir.join(d));
    }
    // The checkout has `runs/` (git-ignored but for its README): pages write there.
    std::fs::create_dir_all(dir.join("runs")).unwrap();
    std::fs::create_dir_all(dir.join(".bin")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_pzt"), dir.join(".bin/pzt")).unwrap();
    dir
}

struct Ran {
    code: Option<i32>,
    output: String,
    took: Duration,
}

fn run_command(dir: &Path, command: &str) -> Ran {
    let path = format!(
        "{}:{}",
        dir.join(".bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("{command}\nexit \"${{PIPESTATUS[0]}}\"\n");
    let t0 = Instant::now();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .env_remove("LOCAL_RANK")
        .env_remove("MASTER_ADDR")
        .env_remove("MASTER_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    // Drain both pipes on threads so that a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if t0.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = t_out.join().unwrap();
    output.push_str(&t_err.join().unwrap());
    Ran {
        code,
        output,
        took: t0.elapsed(),
    }
}

/// Runs the steps of one page; panics with every failure.
fn run_page(page: &str) {
    let _one = ONE_PAGE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let text = std::fs::read_to_string(root().join(page)).unwrap();
    let steps = parse(&text);
    let dir = workdir(page);
    let t0 = Instant::now();
    let mut failures = Vec::new();
    let (mut ran, mut skipped) = (0, 0);
    for step in &steps {
        match step {
            Step::Write { path, text, line } => {
                assert!(
                    !path.starts_with('/') && !path.contains(".."),
                    "{page}:{line}: file={path} must be relative and inside the directory"
                );
                let target = dir.join(path);
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::write(target, text).unwrap();
            }
            Step::Run {
                command,
                expect,
                errors,
                line,
            } => {
                if !RUN.contains(&program(command)) {
                    skipped += 1;
                    continue;
                }
                if let Some(w) = command
                    .split_whitespace()
                    .find(|w| w.trim_start_matches(['\'', '"']).starts_with('/'))
                {
                    failures.push(format!(
                        "{page}:{line}: `{command}` names the absolute path {w}; write under runs/"
                    ));
                    continue;
                }
                ran += 1;
                let r = run_command(&dir, command);
                eprintln!(
                    "{page}:{line}: {:.1} s, exit {:?}: {command}",
                    r.took.as_secs_f64(),
                    r.code
                );
                if r.code != Some(*expect) {
                    failures.push(format!(
                        "{page}:{line}: `{command}` exited with {:?}, the page says {expect}; it printed:\n{}",
                        r.code, r.output
                    ));
                    continue;
                }
                for e in errors {
                    if !r.output.lines().any(|l| matches(e, l.trim_end())) {
                        failures.push(format!(
                            "{page}:{line}: `{command}` did not print the page's line\n  {e}\nit printed:\n{}",
                            r.output
                        ));
                    }
                }
            }
        }
    }
    eprintln!(
        "{page}: {ran} commands run, {skipped} skipped, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        panic!(
            "{} example(s) of {page} failed (their directory is kept: {}):\n\n{}",
            failures.len(),
            dir.display(),
            failures.join("\n\n")
        );
    }
}

/// README.md and every page in docs/.
fn all_pages() -> Vec<String> {
    let mut pages = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.ends_with(".md").then(|| format!("docs/{name}"))
        })
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

#[test]
fn readme() {
    run_page("README.md");
}

#[test]
fn docs_index() {
    run_page("docs/README.md");
}

#[test]
fn docs_recipes() {
    run_page("docs/recipes.md");
}

#[test]
fn docs_data() {
    run_page("docs/data.md");
}

#[test]
fn docs_training() {
    run_page("docs/training.md");
}

#[test]
fn docs_strategies() {
    run_page("docs/strategies.md");
}

#[test]
fn docs_pretrained() {
    run_page("docs/pretrained.md");
}

#[test]
fn docs_distributed() {
    run_page("docs/distributed.md");
}

#[test]
fn docs_inspection() {
    run_page("docs/inspection.md");
}

#[test]
fn docs_library() {
    run_page("docs/library.md");
}

#[test]
fn docs_architecture() {
    run_page("docs/architecture.md");
}

#[test]
fn docs_preference() {
    run_page("docs/preference.md");
}

/// Pages in docs/ without a test of their own (docs/cli.md).
#[test]
fn other_pages() {
    for page in all_pages() {
        if !PAGES.contains(&page.as_str()) {
            run_page(&page);
        }
    }
}

#[test]
fn every_page_is_run() {
    for page in PAGES {
        assert!(root().join(page).is_file(), "{page} is listed but missing");
    }
    let pages = all_pages();
    for page in ["README.md", "docs/README.md"] {
        assert!(pages.iter().any(|p| p == page), "{page} is missing");
    }
}

/// The conventions above, on a made-up page (no pzt runs).
#[test]
fn pages_are_read_by_the_conventions() {
    let page = "text\n\
        ```console\n\
        $ pzt plan recipes/mlp.toml\n\
        recipe ...\n\
        $ pzt train x.toml --set a=1 \\\n    --set b=2   # exit 2\n\
        error: `x` ... wrong\n\
          = note\n\
        ```\n\
        ```toml file=runs/x.toml\n\
        [run]\n\
        ```\n\
        ```sh\n\
        $ pzt never runs\n\
        ```\n\
        ````markdown\n\
        ```console\n\
        $ pzt shown but never run\n\
        ```\n\
        ````\n\
        - a list item:\n\
        \x20 ```console\n\
        \x20 $ pzt --version\n\
        \x20 ```\n";
    let steps = parse(page);
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(
        matches!(&steps[3], Step::Run { command, .. } if command == "pzt --version"),
        "{steps:?}"
    );
    assert_eq!(
        steps[0],
        Step::Run {
            command: "pzt plan recipes/mlp.toml".into(),
            expect: 0,
            errors: vec![],
            line: 3
        }
    );
    let Step::Run {
        command,
        expect,
        errors,
        ..
    } = &steps[1]
    else {
        panic!("{steps:?}")
    };
    assert_eq!(command, "pzt train x.toml --set a=1 --set b=2   # exit 2");
    assert_eq!(*expect, 2);
    assert_eq!(errors, &vec!["error: `x` ... wrong".to_string()]);
    assert!(matches("error: `x` ... wrong", "error: `x` is very wrong"));
    assert!(!matches("error: `x` ... wrong", "error: `y` is very wrong"));
    assert!(matches("error: a ... c ... e", "error: a b c d e"));
    assert!(!matches("error: exact", "error: exact and more"));
    assert_eq!(
        steps[2],
        Step::Write {
            path: "runs/x.toml".into(),
            text: "[run]\n".into(),
            line: 10
        }
    );
    assert_eq!(program("RANK=0 pzt train r.toml"), "pzt");
    assert_eq!(
        program("timeout --preserve-status -s INT 2 pzt train r.toml"),
        "pzt"
    );
    assert_eq!(program("make demo"), "make");
}
