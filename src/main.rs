//! The `pzt` command line. Only this file turns errors into messages and exit codes:
//! 0 success, 2 bad input (arguments, recipes, files), 1 anything else.

use clap::{Parser, Subcommand};
use pzt::backend;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pzt",
    about = "Named-axis models, selectors and model surgery on libtorch",
    disable_version_flag = true
)]
struct Cli {
    /// Print the pzt version, the libtorch version and the devices libtorch sees.
    #[arg(short = 'V', long = "version")]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Resolve a recipe, build its model (shapes only), check shapes on the declared input, and
    /// print the tree, parameter counts and a training-memory estimate.
    Plan {
        /// The recipe file.
        recipe: PathBuf,
        /// Override a recipe key: KEY.PATH=VALUE, VALUE a TOML value (strings quoted).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Collapse the tree below this depth (default 3).
        #[arg(long, default_value_t = 3)]
        depth: usize,
    },
    /// Print the model tree of a recipe.
    Show {
        /// The recipe file.
        recipe: PathBuf,
        /// Collapse nodes below this depth (default: show everything).
        #[arg(long)]
        depth: Option<usize>,
        /// Print the tree as JSON.
        #[arg(long)]
        json: bool,
        /// Override a recipe key: KEY.PATH=VALUE.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Print each subtree a selector matches (path and kind), then the count.
    Select {
        /// The recipe file.
        recipe: PathBuf,
        /// A selector, e.g. 'Attention Linear', 'blocks.*.mlp', 'Linear[0]'.
        selector: String,
        /// Override a recipe key: KEY.PATH=VALUE.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Train the model of a recipe (resumes from the newest checkpoint of its run directory).
    Train {
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
    },
    /// Evaluate a checkpoint of a recipe's run on its eval split.
    Eval {
        /// The recipe file.
        recipe: PathBuf,
        /// The checkpoint directory (default: the newest of the run).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Override a recipe key: KEY.PATH=VALUE.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print the metrics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compute the logits of a token sequence (top-5 next tokens per position, or a
    /// safetensors file with `logits` [1, T, vocab] float32).
    Logits {
        /// An HF model directory, a recipe, or a run checkpoint directory.
        model: PathBuf,
        /// Token ids, e.g. "1 2 3".
        #[arg(long, conflicts_with = "text")]
        tokens: Option<String>,
        /// Text, tokenized with the model's tokenizer.json (or the recipe's tokenizer).
        #[arg(long)]
        text: Option<String>,
        /// Write the logits to this safetensors file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Parameter dtype: float32, bfloat16, float16 (default: the checkpoint's).
        #[arg(long)]
        dtype: Option<String>,
        /// auto, cpu or cuda.
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Generate tokens after a prompt, streaming them as they are sampled (KV cache).
    Generate(GenerateArgs),
    /// Write a checkpoint (or an HF model directory) as a HuggingFace model directory.
    Export {
        /// A run checkpoint directory whose recipe loads an HF model (`[model] hf = ...`), or
        /// an HF model directory.
        checkpoint: PathBuf,
        /// The output directory.
        #[arg(long = "hf")]
        hf: PathBuf,
        /// float32 (default), bfloat16 or float16.
        #[arg(long)]
        dtype: Option<String>,
    },
    /// Run a built-in example.
    Demo {
        #[command(subcommand)]
        which: Demo,
    },
}

#[derive(Subcommand)]
enum Demo {
    /// Train an MLP built from combinators on XOR until the MSE is below 1e-3.
    Xor {
        /// Base seed for parameter initialization.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Give up after this many steps.
        #[arg(long, default_value_t = 2000)]
        max_steps: usize,
        /// auto (GPU when present), cpu or cuda.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Show the model tree before training.
        #[arg(long)]
        show: bool,
    },
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// An HF model directory, a recipe, or a run checkpoint directory.
    model: PathBuf,
    /// The prompt text (needs a tokenizer).
    #[arg(long, conflicts_with = "tokens")]
    prompt: Option<String>,
    /// The prompt as token ids, e.g. "1 2 3".
    #[arg(long)]
    tokens: Option<String>,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recompute the whole sequence every step instead of using the KV cache.
    #[arg(long)]
    no_cache: bool,
    #[arg(long)]
    dtype: Option<String>,
    #[arg(long, default_value = "auto")]
    device: String,
}

enum Failure {
    BadInput(String),
    /// A bad-input message already rendered (with `error:` and a snippet).
    Rendered(String),
    Run(String),
}

use backend::device_name;

fn parse_device(s: &str) -> Result<tch::Device, Failure> {
    backend::parse_device(s).map_err(|e| match e {
        backend::DeviceError::NoCuda => {
            Failure::BadInput("--device cuda: libtorch sees no CUDA device on this machine".into())
        }
        backend::DeviceError::Unknown(other) => Failure::BadInput(format!(
            "--device: expected auto, cpu or cuda, got `{other}`"
        )),
    })
}

fn print_version() {
    println!("pzt {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch {}", backend::torch_version());
    let devs: Vec<String> = backend::devices().into_iter().map(device_name).collect();
    println!("devices: {}", devs.join(", "));
    println!("default device: {}", device_name(backend::auto_device()));
}

fn run_xor(seed: u64, max_steps: usize, device: &str, show: bool) -> Result<(), Failure> {
    let device = parse_device(device)?;
    let cfg = pzt::demo::XorConfig {
        seed,
        max_steps,
        device,
        ..Default::default()
    };
    println!(
        "pzt demo xor: MLP [2 -> {} -> 1] from combinators, AdamW lr {}, on {}",
        cfg.hidden,
        cfg.lr,
        device_name(device)
    );
    if show {
        let b = pzt::tree::Builder::slots();
        let m = pzt::models::mlp::mlp(
            &b.scope("mlp"),
            "features",
            "hidden",
            &[2, cfg.hidden, 1],
            pzt::layers::misc::Activation::Tanh,
        )
        .map_err(|e| Failure::Run(e.to_string()))?;
        print!("{}", m.render(usize::MAX));
    }
    let report = pzt::demo::train_xor(&cfg, |step, loss| {
        if step == 1 || step % 100 == 0 {
            println!("step {step:>5}  loss {loss:.6}");
        }
    })
    .map_err(|e| Failure::Run(e.to_string()))?;
    let (last_step, last_loss) = report.losses.last().copied().unwrap_or((0, f64::NAN));
    println!("step {last_step:>5}  loss {last_loss:.6}  (final)");
    let preds: Vec<String> = report
        .predictions
        .iter()
        .map(|p| format!("{p:.3}"))
        .collect();
    println!(
        "predictions for (0,0) (0,1) (1,0) (1,1): {}  (targets 0 1 1 0)",
        preds.join(" ")
    );
    if last_loss < cfg.target_loss {
        println!("reached loss < {} in {last_step} steps", cfg.target_loss);
        Ok(())
    } else {
        Err(Failure::Run(format!(
            "loss {last_loss:.6} still above {} after {last_step} steps",
            cfg.target_loss
        )))
    }
}

fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn lib_err(e: pzt::Error) -> Failure {
    match e {
        pzt::Error::Recipe(m) => Failure::Rendered(m),
        other if other.is_bad_input() => Failure::BadInput(other.to_string()),
        other => Failure::Run(other.to_string()),
    }
}

fn run_train(recipe: PathBuf, set: Vec<String>, resume: bool, json: bool) -> Result<(), Failure> {
    let r = pzt::recipe::Recipe::load(&recipe, &set).map_err(lib_err)?;
    if resume && pzt::train::checkpoint::latest(&r.run.out_dir).is_none() && !json {
        println!(
            "--resume: no checkpoint in {} yet; starting from step 0",
            r.run.out_dir.display()
        );
    }
    let _ = ctrlc::set_handler(pzt::train::trainer::request_stop);
    let opts = pzt::train::trainer::TrainOptions {
        progress: std::io::stdout().is_terminal() && !json,
        quiet: json,
    };
    let s = pzt::train::trainer::train(r, &pzt::builtin_registry(), &opts).map_err(lib_err)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s.to_json()).unwrap_or_default()
        );
    } else {
        let ck = s
            .checkpoint
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into());
        println!(
            "done: `{}` step {}/{} on {} in {:.1} s; final loss {}",
            s.name,
            s.steps,
            s.total_steps,
            s.device,
            s.elapsed_s,
            s.final_loss
                .map(|l| format!("{l:.4}"))
                .unwrap_or_else(|| "-".into())
        );
        for (k, v) in &s.eval {
            println!(
                "  {k:<20} {}",
                v.as_f64()
                    .map(|f| format!("{f:.4}"))
                    .unwrap_or_else(|| v.to_string())
            );
        }
        println!("  checkpoint           {ck}");
        println!(
            "  metrics              {}",
            s.out_dir.join("metrics.jsonl").display()
        );
        println!(
            "  tensorboard          {}",
            s.out_dir.join("tensorboard").display()
        );
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

fn parse_dtype(d: &Option<String>) -> Result<Option<tch::Kind>, Failure> {
    match d {
        None => Ok(None),
        Some(s) => pzt::layers::misc::parse_dtype(s)
            .map(Some)
            .map_err(|e| Failure::BadInput(format!("--dtype: {e}"))),
    }
}

fn model_tokens(
    m: &pzt::loader::Loaded,
    tokens: &Option<String>,
    text: &Option<String>,
) -> Result<Vec<i64>, Failure> {
    let ids = match (tokens, text) {
        (Some(t), _) => pzt::loader::parse_tokens(t).map_err(lib_err)?,
        (None, Some(t)) => match &m.tokenizer {
            Some(tok) => tok.encode(t).map_err(lib_err)?,
            None => {
                return Err(Failure::BadInput(
                    "this model has no tokenizer (tokenizer.json); pass --tokens".into(),
                ))
            }
        },
        (None, None) => {
            return Err(Failure::BadInput(
                "give the input as --tokens \"1 2 3\" or as text".into(),
            ))
        }
    };
    if ids.is_empty() {
        return Err(Failure::BadInput("the input is empty".into()));
    }
    if let Some((_, n)) = pzt::tree::select(&m.tree)
        .at_instances_of("EmbeddingLookup")
        .get()
        .first()
    {
        if let Some(l) = n.layer_as::<pzt::layers::embedding::EmbeddingLookup>() {
            if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= l.vocab_size) {
                return Err(Failure::BadInput(format!(
                    "token id {bad} is outside the vocabulary (0..{})",
                    l.vocab_size
                )));
            }
        }
    }
    Ok(ids)
}

fn run_logits(
    model: PathBuf,
    tokens: Option<String>,
    text: Option<String>,
    out: Option<PathBuf>,
    dtype: Option<String>,
    device: String,
) -> Result<(), Failure> {
    let device = parse_device(&device)?;
    let m = pzt::loader::load(
        &model,
        &pzt::builtin_registry(),
        parse_dtype(&dtype)?,
        device,
    )
    .map_err(lib_err)?;
    let ids = model_tokens(&m, &tokens, &text)?;
    let logits = pzt::models::generate::logits(&m.tree, &ids, &m.axes, device).map_err(lib_err)?;
    match out {
        Some(path) => {
            let t = logits.to_device(tch::Device::Cpu).unsqueeze(0).contiguous();
            tch::Tensor::write_safetensors(&[("logits", &t)], &path)
                .map_err(|e| Failure::Run(format!("{}: {e}", path.display())))?;
            println!("wrote {} (logits, float32, {:?})", path.display(), t.size());
        }
        None => {
            let top = logits.topk(5, -1, true, true);
            for (i, id) in ids.iter().enumerate() {
                let v: Vec<f64> = Vec::try_from(top.0.get(i as i64).to_kind(tch::Kind::Double))
                    .unwrap_or_default();
                let k: Vec<i64> = Vec::try_from(top.1.get(i as i64)).unwrap_or_default();
                let show = |t: i64| {
                    m.tokenizer
                        .as_ref()
                        .map(|tok| format!("{t} {:?}", tok.decode(&[t])))
                        .unwrap_or_else(|| t.to_string())
                };
                let row: Vec<String> = k
                    .iter()
                    .zip(&v)
                    .map(|(t, l)| format!("{} ({l:.3})", show(*t)))
                    .collect();
                println!("{i:>4} {:>12}  ->  {}", show(*id), row.join(", "));
            }
        }
    }
    Ok(())
}

fn run_generate(a: GenerateArgs) -> Result<(), Failure> {
    use std::io::Write;
    let GenerateArgs {
        model,
        prompt,
        tokens,
        max_new_tokens: max_new,
        temperature,
        top_k,
        top_p,
        seed,
        no_cache,
        dtype,
        device,
    } = a;
    let device = parse_device(&device)?;
    let m = pzt::loader::load(
        &model,
        &pzt::builtin_registry(),
        parse_dtype(&dtype)?,
        device,
    )
    .map_err(lib_err)?;
    let ids = model_tokens(&m, &tokens, &prompt)?;
    if let Some(p) = top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(Failure::BadInput(format!(
                "--top-p must be in (0, 1], got {p}"
            )));
        }
    }
    let s = pzt::models::generate::Sampling {
        temperature,
        top_k,
        top_p,
        seed,
    };
    let mut out = std::io::stdout();
    let text_mode = m.tokenizer.is_some() && prompt.is_some();
    if text_mode {
        print!("{}", prompt.clone().unwrap_or_default());
    }
    let mut all = vec![];
    let mut shown = String::new();
    pzt::models::generate::generate(
        &m.tree,
        &ids,
        max_new,
        &m.eos,
        &s,
        &m.axes,
        device,
        !no_cache,
        |t| {
            all.push(t);
            match (&m.tokenizer, text_mode) {
                (Some(tok), true) => {
                    let text = tok.decode(&all);
                    if text.len() >= shown.len() && text.starts_with(&shown) {
                        print!("{}", &text[shown.len()..]);
                    } else {
                        print!("{text}");
                    }
                    shown = text;
                }
                _ => print!("{t} "),
            }
            let _ = out.flush();
        },
    )
    .map_err(lib_err)?;
    println!();
    Ok(())
}

fn run_export(checkpoint: PathBuf, hf: PathBuf, dtype: Option<String>) -> Result<(), Failure> {
    let kind = parse_dtype(&dtype)?.unwrap_or(tch::Kind::Float);
    let m = pzt::loader::load(
        &checkpoint,
        &pzt::builtin_registry(),
        Some(tch::Kind::Float),
        tch::Device::Cpu,
    )
    .map_err(lib_err)?;
    let Some(src) = m.hf_dir.clone() else {
        return Err(Failure::BadInput(format!("{}: export needs a model loaded from a HuggingFace directory (`[model] hf = \"...\"` in its recipe)", checkpoint.display())));
    };
    let cfg = std::fs::read_to_string(src.join("config.json"))
        .map_err(|e| Failure::BadInput(format!("{}: {e}", src.join("config.json").display())))?;
    let arch = pzt::models::hf::parse(&cfg, &src.display().to_string()).map_err(lib_err)?;
    if hf.exists()
        && std::fs::read_dir(&hf)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return Err(Failure::BadInput(format!(
            "{} exists and is not empty; choose a new directory",
            hf.display()
        )));
    }
    pzt::models::hf::export(&m.tree, &arch, &cfg, &hf, kind).map_err(lib_err)?;
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ] {
        if src.join(f).is_file() {
            let _ = std::fs::copy(src.join(f), hf.join(f));
        }
    }
    println!(
        "wrote {} ({} layout: config.json, model.safetensors)",
        hf.display(),
        arch.model_type
    );
    Ok(())
}

fn run_eval(
    recipe: PathBuf,
    set: Vec<String>,
    checkpoint: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    let r = pzt::recipe::Recipe::load(&recipe, &set).map_err(lib_err)?;
    let (dir, m) = pzt::train::trainer::eval(r, &pzt::builtin_registry(), checkpoint.as_deref())
        .map_err(lib_err)?;
    if json {
        let mut j = serde_json::Map::new();
        j.insert(
            "checkpoint".into(),
            serde_json::Value::String(dir.display().to_string()),
        );
        j.insert("metrics".into(), serde_json::Value::Object(m));
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
    } else {
        println!("checkpoint {}", dir.display());
        for (k, v) in &m {
            println!(
                "  {k:<20} {}",
                v.as_f64()
                    .map(|f| format!("{f:.4}"))
                    .unwrap_or_else(|| v.to_string())
            );
        }
    }
    Ok(())
}

fn run_plan(recipe: PathBuf, set: Vec<String>, json: bool, depth: usize) -> Result<(), Failure> {
    let r = pzt::recipe::Recipe::load(&recipe, &set).map_err(lib_err)?;
    let plan =
        pzt::recipe::plan::Plan::shapes_only(r, &pzt::builtin_registry()).map_err(lib_err)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan.to_json()).unwrap_or_default()
        );
    } else {
        print!("{}", plan.render(depth, use_color()));
    }
    Ok(())
}

fn run_show(
    recipe: PathBuf,
    set: Vec<String>,
    json: bool,
    depth: Option<usize>,
) -> Result<(), Failure> {
    let r = pzt::recipe::Recipe::load(&recipe, &set).map_err(lib_err)?;
    let tree = pzt::recipe::plan::Plan::tree_only(&r, &pzt::builtin_registry()).map_err(lib_err)?;
    if json {
        let j = pzt::recipe::plan::tree_json(&tree, "", None);
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
    } else {
        print!(
            "{}",
            tree.render_styled(depth.unwrap_or(usize::MAX), use_color())
        );
    }
    Ok(())
}

fn run_select(recipe: PathBuf, set: Vec<String>, selector: String) -> Result<(), Failure> {
    let sel = pzt::tree::selector::Selector::parse(&selector)
        .map_err(|e| Failure::Rendered(e.render(&selector)))?;
    let r = pzt::recipe::Recipe::load(&recipe, &set).map_err(lib_err)?;
    let tree = pzt::recipe::plan::Plan::tree_only(&r, &pzt::builtin_registry()).map_err(lib_err)?;
    let s = sel.select(&tree);
    for (path, node) in s.get() {
        let p = if path.is_empty() {
            "<root>".to_string()
        } else {
            path
        };
        println!("{p}  {}", node.kind());
    }
    let n = s.count();
    println!("{n} match{}", if n == 1 { "" } else { "es" });
    Ok(())
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`pzt show ... | head`), like other command-line tools,
    // instead of panicking in println!.
    // SAFETY: setting a signal disposition to its default at start-up, before any threads.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if cli.version {
        print_version();
        return ExitCode::SUCCESS;
    }
    let result = match cli.command {
        None => {
            print_version();
            println!("\nrun `pzt --help` for the commands");
            Ok(())
        }
        Some(Command::Train {
            recipe,
            set,
            resume,
            json,
        }) => run_train(recipe, set, resume, json),
        Some(Command::Eval {
            recipe,
            checkpoint,
            set,
            json,
        }) => run_eval(recipe, set, checkpoint, json),
        Some(Command::Logits {
            model,
            tokens,
            text,
            out,
            dtype,
            device,
        }) => run_logits(model, tokens, text, out, dtype, device),
        Some(Command::Generate(a)) => run_generate(a),
        Some(Command::Export {
            checkpoint,
            hf,
            dtype,
        }) => run_export(checkpoint, hf, dtype),
        Some(Command::Plan {
            recipe,
            set,
            json,
            depth,
        }) => run_plan(recipe, set, json, depth),
        Some(Command::Show {
            recipe,
            set,
            json,
            depth,
        }) => run_show(recipe, set, json, depth),
        Some(Command::Select {
            recipe,
            selector,
            set,
        }) => run_select(recipe, set, selector),
        Some(Command::Demo {
            which:
                Demo::Xor {
                    seed,
                    max_steps,
                    device,
                    show,
                },
        }) => run_xor(seed, max_steps, &device, show),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Rendered(m)) => {
            eprint!("{m}");
            ExitCode::from(2)
        }
        Err(Failure::Run(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}
