//! The training loop behind `pzt train`, and the evaluation behind `pzt eval`.
//!
//! Deterministic: parameters are initialized from (seed, label); the data order is a pure
//! function of (seed, epoch); dropout streams are derived from (seed, step, micro-batch); the
//! learning rate from the step. With the same recipe, seed, machine and thread count, the
//! metrics (except wall-clock fields) and the final parameters are bit-identical, and a run
//! resumed from a checkpoint continues exactly as the uninterrupted run would have.

use super::checkpoint::{self, TrainState};
use super::config::{Precision, TrainConfig};
use super::metrics::MetricsWriter;
use super::optim::Optimizer;
use super::tensorboard::EventWriter;
use crate::base::seed::mix;
use crate::base::{Error, Result, TorchContext};
use crate::data::sources::{self, CsvTask, DataConfig};
use crate::data::tokenizer::Tokenizer;
use crate::data::{Cursor, Dataset, Example};
use crate::named::NamedTensor;
use crate::params::RandomStream;
use crate::recipe::plan::Plan;
use crate::recipe::Recipe;
use crate::tree::{Builder, Node, SideInputs, SideValue};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

static STOP: AtomicBool = AtomicBool::new(false);

/// Asks a running training loop to stop after the current step (Ctrl-C / SIGTERM).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// How `pzt train` was asked to run.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Show a progress bar (on a terminal) instead of plain log lines.
    pub progress: bool,
    /// Print nothing while training (for `--json`).
    pub quiet: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: String,
    pub out_dir: PathBuf,
    pub device: String,
    pub steps: u64,
    pub total_steps: u64,
    pub resumed_from: Option<u64>,
    pub final_loss: Option<f64>,
    pub eval: Map<String, Value>,
    pub checkpoint: Option<PathBuf>,
    pub elapsed_s: f64,
    pub interrupted: bool,
}

impl Summary {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "out_dir": self.out_dir.display().to_string(),
            "device": self.device,
            "steps": self.steps,
            "total_steps": self.total_steps,
            "resumed_from": self.resumed_from,
            "final_loss": self.final_loss,
            "eval": self.eval,
            "checkpoint": self.checkpoint.as_ref().map(|p| p.display().to_string()),
            "elapsed_s": self.elapsed_s,
            "interrupted": self.interrupted,
        })
    }
}

/// The device named by `[train] device`.
pub fn pick_device(name: &str) -> Result<Device> {
    crate::backend::parse_device(name).map_err(|e| Error::ConfigField {
        field: "device".into(),
        message: match e {
            crate::backend::DeviceError::NoCuda => {
                "[train]: device = \"cuda\" but libtorch sees no CUDA device".into()
            }
            crate::backend::DeviceError::Unknown(other) => {
                format!("[train]: unknown device `{other}`")
            }
        },
    })
}

use crate::backend::device_name;

/// Everything a run needs, set up from a recipe.
pub struct Setup {
    pub recipe: Recipe,
    pub data_cfg: DataConfig,
    pub train_cfg: TrainConfig,
    pub tokenizer: Tokenizer,
    pub data: Dataset,
    pub data_cached: bool,
    pub tree: Node,
    pub device: Device,
    /// Input axis names: (batch, seq or features).
    pub axes: (String, String),
}

fn recipe_dir(r: &Recipe) -> PathBuf {
    r.resolved
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Maps an error about a key of a section to a located recipe error.
fn in_section(r: &Recipe, section: &str, e: Error) -> Error {
    match e {
        Error::ConfigField { .. } => {
            let Some(t) = r.resolved.root.as_table().and_then(|t| t.get(section)) else {
                return e;
            };
            let Some(tab) = t.node.as_table() else {
                return e;
            };
            let d = crate::recipe::diagnose::config_error(
                e,
                tab,
                t.node.loc.clone(),
                &[section.to_string()],
                &[],
            );
            crate::recipe::recipe_error(&r.resolved.sources, d)
        }
        other => other,
    }
}

fn need<'a, T>(r: &Recipe, v: &'a Option<T>, section: &str) -> Result<&'a T> {
    v.as_ref().ok_or_else(|| {
        let d = crate::recipe::source::Diagnostic::new(format!(
            "training needs a `[{section}]` section"
        ))
        .at(Some(crate::recipe::source::Loc {
            file: 0,
            span: 0..0,
        }))
        .note("see README.md, \"Training\", for the keys");
        crate::recipe::recipe_error(&r.resolved.sources, d)
    })
}

impl Setup {
    /// Loads data, builds the model on the device with parameters from the seed.
    pub fn new(recipe: Recipe, registry: &crate::tree::Registry) -> Result<Setup> {
        let data_cfg = need(&recipe, &recipe.data, "data")?.clone();
        let train_cfg = need(&recipe, &recipe.train, "train")?.clone();
        if let Some(n) = train_cfg.threads {
            tch::set_num_threads(n);
        }
        // Nothing in the loop draws from libtorch's global generators, but seed them anyway so
        // that the saved RNG states (and any custom layer that uses them) are reproducible.
        tch::manual_seed(recipe.run.seed as i64);
        if train_cfg.deterministic {
            crate::backend::set_deterministic_warn_only(true)?;
            crate::backend::set_cudnn_deterministic(true)?;
            if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
                std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
            }
        }
        let device = pick_device(&train_cfg.device).map_err(|e| in_section(&recipe, "train", e))?;
        let base = recipe_dir(&recipe);
        let tokenizer = Tokenizer::load(&data_cfg.tokenizer, &base).map_err(|e| {
            in_section(
                &recipe,
                "data",
                Error::ConfigField {
                    field: "tokenizer".into(),
                    message: e.to_string(),
                },
            )
        })?;
        let cache_dir = match &data_cfg.cache_dir {
            Some(c) => base.join(c),
            None => recipe.run.out_dir.join("cache"),
        };
        let (data, data_cached) =
            sources::load(&data_cfg, &base, &cache_dir, recipe.run.seed, &tokenizer)
                .map_err(|e| in_section(&recipe, "data", e))?;
        let builder = Builder::new(recipe.run.seed)
            .on(device)
            .dtype(recipe.param_dtype);
        let plan = Plan::build(recipe.clone(), registry, &builder)?;
        let tree = plan.tree;
        let axes = match &recipe.input {
            Some(i) if i.axes.len() == 2 => {
                let names: Vec<&String> = i.axes.keys().collect();
                (names[0].clone(), names[1].clone())
            }
            Some(_) => return Err(Error::Config("training needs `[model.input]` with exactly two axes: (batch, seq) or (batch, features)".into())),
            None => ("batch".into(), if data_cfg.is_lm() { "seq".into() } else { "features".into() }),
        };
        if data_cfg.is_lm() {
            if let Some((_, n)) = crate::tree::select(&tree)
                .at_instances_of("EmbeddingLookup")
                .get()
                .first()
            {
                if let Some(l) = n.layer_as::<crate::layers::embedding::EmbeddingLookup>() {
                    if l.vocab_size < tokenizer.vocab_size() {
                        return Err(Error::Config(format!(
                            "the model's vocabulary ({}) is smaller than the tokenizer's ({})",
                            l.vocab_size,
                            tokenizer.vocab_size()
                        )));
                    }
                }
            }
        }
        Ok(Setup {
            recipe,
            data_cfg,
            train_cfg,
            tokenizer,
            data,
            data_cached,
            tree,
            device,
            axes,
        })
    }

    /// A batch of examples as (model input, targets, mask) tensors on the device.
    fn batch(&self, items: &[&Example]) -> Result<(NamedTensor, Tensor, Tensor)> {
        let (ba, sa) = (self.axes.0.as_str(), self.axes.1.as_str());
        if self.data_cfg.is_lm() {
            let t = self.data_cfg.seq_len.unwrap_or(1);
            let b = items.len();
            let mut inp = vec![0i64; b * t];
            let mut tgt = vec![0i64; b * t];
            let mut msk = vec![0f32; b * t];
            for (i, e) in items.iter().enumerate() {
                if let Example::Tokens { ids, mask, .. } = e {
                    let n = ids.len().min(t + 1);
                    for j in 0..n.saturating_sub(1) {
                        inp[i * t + j] = ids[j];
                        tgt[i * t + j] = ids[j + 1];
                        msk[i * t + j] = mask[j + 1] as f32;
                    }
                }
            }
            let to = |v: Tensor| {
                v.f_reshape([b as i64, t as i64])
                    .and_then(|x| x.f_to_device(self.device))
                    .ctx("batch")
            };
            let x = NamedTensor::wrap(to(Tensor::from_slice(&inp))?, &[ba, sa])?;
            Ok((
                x,
                to(Tensor::from_slice(&tgt))?,
                to(Tensor::from_slice(&msk))?,
            ))
        } else {
            let f = self.data.num_features as usize;
            let b = items.len();
            let mut xs = vec![0f32; b * f];
            let mut ys = vec![0f32; b];
            for (i, e) in items.iter().enumerate() {
                if let Example::Row { x, y } = e {
                    xs[i * f..(i + 1) * f].copy_from_slice(x);
                    ys[i] = *y;
                }
            }
            let x = Tensor::from_slice(&xs)
                .f_reshape([b as i64, f as i64])
                .and_then(|x| x.f_to_device(self.device))
                .ctx("batch")?;
            let y = Tensor::from_slice(&ys)
                .f_to_device(self.device)
                .ctx("batch")?;
            let m = y.f_ones_like().ctx("batch")?;
            Ok((NamedTensor::wrap(x, &[ba, sa])?, y, m))
        }
    }

    fn forward(&self, x: NamedTensor, side: &SideInputs) -> Result<NamedTensor> {
        let autocast = self.train_cfg.precision == Precision::Bf16;
        if autocast {
            crate::backend::set_autocast(self.device, Some(Kind::BFloat16))?;
        }
        let out = self.tree.forward(x, side).and_then(|v| v.into_tensor());
        if autocast {
            crate::backend::set_autocast(self.device, None)?;
        }
        out
    }

    /// The output rearranged to `[batch, seq, classes]` (LM) or `[batch, classes]`.
    fn logits(&self, y: &NamedTensor) -> Result<Tensor> {
        let (ba, sa) = (&self.axes.0, &self.axes.1);
        let extra: Vec<String> = y
            .names()
            .iter()
            .filter(|n| *n != ba && (!self.data_cfg.is_lm() || *n != sa))
            .cloned()
            .collect();
        if extra.len() != 1 || !y.has(ba) || (self.data_cfg.is_lm() && !y.has(sa)) {
            return Err(Error::Config(format!(
                "the model output {} should have the axes `{ba}`{} and one more (the classes or vocabulary)",
                y.describe(),
                if self.data_cfg.is_lm() { format!(", `{sa}`") } else { String::new() }
            )));
        }
        let mut order = vec![ba.clone()];
        if self.data_cfg.is_lm() {
            order.push(sa.clone());
        }
        order.push(extra[0].clone());
        y.with_name_order(&order)?
            .tensor()
            .f_to_kind(Kind::Float)
            .ctx("logits")
    }

    /// Loss (mean over masked targets), and (sum of loss, mask count, correct count) for
    /// aggregation.
    fn loss(
        &self,
        y: &NamedTensor,
        tgt: &Tensor,
        mask: &Tensor,
    ) -> Result<(Tensor, f64, f64, f64)> {
        let logits = self.logits(y)?;
        let regression = !self.data_cfg.is_lm() && self.data_cfg.task == CsvTask::Regression;
        let count = mask
            .f_sum(Kind::Float)
            .and_then(|s| s.f_double_value(&[]))
            .ctx("loss")?
            .max(1.0);
        if regression {
            let pred = logits
                .f_reshape([-1])
                .ctx("mse: the regression output must have one value per example")?;
            let se = pred.f_sub(tgt).and_then(|d| d.f_square()).ctx("mse")?;
            let total = se.f_sum(Kind::Float).ctx("mse")?;
            let mean = total.f_div_scalar(count).ctx("mse")?;
            let sum = total.f_double_value(&[]).ctx("mse")?;
            return Ok((mean, sum, count, 0.0));
        }
        let logp = logits.f_log_softmax(-1, Kind::Float).ctx("cross-entropy")?;
        let idx = tgt
            .f_to_kind(Kind::Int64)
            .and_then(|t| t.f_unsqueeze(-1))
            .ctx("cross-entropy")?;
        let nll = logp
            .f_gather(-1, &idx, false)
            .and_then(|g| g.f_squeeze_dim(-1))
            .and_then(|g| g.f_neg())
            .ctx("cross-entropy")?;
        let masked = nll.f_mul(mask).ctx("cross-entropy")?;
        let total = masked.f_sum(Kind::Float).ctx("cross-entropy")?;
        let mean = total.f_div_scalar(count).ctx("cross-entropy")?;
        let pred = logits.f_argmax(-1, false).ctx("accuracy")?;
        let correct = pred
            .f_eq_tensor(&tgt.f_to_kind(Kind::Int64).ctx("accuracy")?)
            .and_then(|c| c.f_to_kind(Kind::Float))
            .and_then(|c| c.f_mul(mask))
            .and_then(|c| c.f_sum(Kind::Float))
            .and_then(|c| c.f_double_value(&[]))
            .ctx("accuracy")?;
        let sum = total.f_double_value(&[]).ctx("cross-entropy")?;
        Ok((mean, sum, count, correct))
    }

    /// Greedy completion of `prompt` (no KV cache: the whole sequence is recomputed per token).
    pub fn greedy(&self, prompt: &[i64], max_new: usize) -> Result<Vec<i64>> {
        let _ng = tch::no_grad_guard();
        let mut ids = prompt.to_vec();
        let eos = self.tokenizer.eos_id();
        let mut out = vec![];
        for _ in 0..max_new {
            let t = Tensor::from_slice(&ids)
                .f_reshape([1, ids.len() as i64])
                .and_then(|x| x.f_to_device(self.device))
                .ctx("generate")?;
            let x = NamedTensor::wrap(t, &[self.axes.0.as_str(), self.axes.1.as_str()])?;
            let y = self.forward(x, &SideInputs::new())?;
            let logits = self.logits(&y)?;
            let last = logits
                .f_select(1, ids.len() as i64 - 1)
                .and_then(|l| l.f_argmax(-1, false))
                .and_then(|a| a.f_int64_value(&[0]))
                .ctx("generate")?;
            out.push(last);
            ids.push(last);
            if last == eos {
                break;
            }
        }
        Ok(out)
    }

    /// Evaluation metrics on the eval split: `eval.loss`, and `eval.perplexity`,
    /// `eval.token_accuracy`, `eval.exact_match` (LMs) or `eval.accuracy` (classification).
    pub fn evaluate(&self) -> Result<Map<String, Value>> {
        let _ng = tch::no_grad_guard();
        let mut m = Map::new();
        if self.data.eval.is_empty() {
            return Ok(m);
        }
        let (mut sum, mut count, mut correct) = (0.0, 0.0, 0.0);
        for chunk in self.data.eval.chunks(self.train_cfg.batch_size) {
            let items: Vec<&Example> = chunk.iter().collect();
            let (x, t, mk) = self.batch(&items)?;
            let y = self.forward(x, &SideInputs::new())?;
            let (_, s, c, k) = self.loss(&y, &t, &mk)?;
            sum += s;
            count += c;
            correct += k;
        }
        let loss = sum / count.max(1.0);
        m.insert("eval.loss".into(), json!(loss));
        let regression = !self.data_cfg.is_lm() && self.data_cfg.task == CsvTask::Regression;
        if self.data_cfg.is_lm() {
            m.insert("eval.perplexity".into(), json!(loss.exp()));
            m.insert(
                "eval.token_accuracy".into(),
                json!(correct / count.max(1.0)),
            );
            let prompted: Vec<&Example> = self
                .data
                .eval
                .iter()
                .filter(|e| matches!(e, Example::Tokens { prompt_len, .. } if *prompt_len > 0))
                .take(self.train_cfg.eval_generate)
                .collect();
            if !prompted.is_empty() {
                let mut hits = 0usize;
                for e in &prompted {
                    if let Example::Tokens {
                        ids, prompt_len, ..
                    } = e
                    {
                        let want = &ids[*prompt_len..];
                        let got = self.greedy(&ids[..*prompt_len], want.len() + 2)?;
                        if got == want {
                            hits += 1;
                        }
                    }
                }
                m.insert(
                    "eval.exact_match".into(),
                    json!(hits as f64 / prompted.len() as f64),
                );
            }
        } else if !regression {
            m.insert("eval.accuracy".into(), json!(correct / count.max(1.0)));
        }
        Ok(m)
    }
}

/// The resolved recipe as TOML, with data paths made absolute, for `recipe.toml` in
/// checkpoints.
pub fn resolved_recipe_toml(r: &Recipe) -> String {
    let mut v = r.resolved.root.to_toml();
    let base = recipe_dir(r);
    let abs = |s: &str| {
        let p = base.join(s);
        p.canonicalize().unwrap_or(p).display().to_string()
    };
    if let Some(toml::Value::String(h)) = v
        .get_mut("model")
        .and_then(|m| m.as_table_mut())
        .and_then(|m| m.get_mut("hf"))
    {
        *h = abs(h);
    }
    if let Some(d) = v.get_mut("data").and_then(|d| d.as_table_mut()) {
        if let Some(toml::Value::Array(files)) = d.get_mut("files") {
            for f in files.iter_mut() {
                if let toml::Value::String(s) = f {
                    *s = abs(s);
                }
            }
        }
        if let Some(toml::Value::String(t)) = d.get_mut("tokenizer") {
            if t != "bytes" {
                *t = abs(t);
            }
        }
    }
    toml::to_string(&v).unwrap_or_default()
}

fn fmt_metrics(m: &Map<String, Value>) -> String {
    m.iter()
        .map(|(k, v)| {
            format!(
                "{k} {}",
                v.as_f64()
                    .map(|f| format!("{f:.4}"))
                    .unwrap_or_else(|| v.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// Runs (or resumes) training.
pub fn train(
    recipe: Recipe,
    registry: &crate::tree::Registry,
    opts: &TrainOptions,
) -> Result<Summary> {
    let start = Instant::now();
    need(&recipe, &recipe.data, "data")?;
    need(&recipe, &recipe.train, "train")?;
    let optim_cfg = need(&recipe, &recipe.optim, "optim")?.clone();
    let ck_cfg = recipe.checkpoint.clone();
    let setup = Setup::new(recipe, registry)?;
    let r = &setup.recipe;
    let tc = &setup.train_cfg;
    let out_dir = r.run.out_dir.clone();
    std::fs::create_dir_all(&out_dir).map_err(|source| Error::Io {
        path: out_dir.display().to_string(),
        source,
    })?;
    let say = |s: String| {
        if !opts.quiet {
            println!("{s}");
        }
    };
    let params = setup.tree.trainable_parameters();
    let mut opt = Optimizer::new(params.clone(), optim_cfg.clone());
    let mut step: u64 = 0;
    let mut cursor = Cursor::new(r.run.seed, setup.data.train.len(), 0);
    let mut best: Option<(f64, u64)> = None;
    let mut last_eval = Map::new();
    let mut resumed_from = None;
    if let Some((s, dir)) = checkpoint::latest(&out_dir) {
        let (state, opt_state) = checkpoint::load(&dir, &params)?;
        if state.step > tc.steps {
            return Err(Error::Config(format!(
                "{} is at step {}, past [train] steps = {}; raise steps or use another out_dir",
                dir.display(),
                state.step,
                tc.steps
            )));
        }
        opt.load_state(state.optimizer_step, opt_state)
            .map_err(|e| Error::Config(format!("checkpoint {}: {e}", dir.display())))?;
        checkpoint::set_cpu_rng_hex(&state.rng_cpu)?;
        step = state.step;
        cursor = Cursor::new(r.run.seed, setup.data.train.len(), state.cursor);
        best = state.best;
        last_eval = state.metrics.clone();
        resumed_from = Some(s);
        say(format!(
            "resuming `{}` from {} (step {s} of {})",
            r.run.name,
            dir.display(),
            tc.steps
        ));
    } else {
        say(format!(
            "training `{}`: {} parameters on {}, {} train / {} eval examples{}",
            r.run.name,
            crate::recipe::plan::grouped(setup.tree.num_params()),
            device_name(setup.device),
            setup.data.train.len(),
            setup.data.eval.len(),
            if setup.data_cached {
                " (tokenized data from cache)"
            } else {
                ""
            }
        ));
    }
    let mut metrics = MetricsWriter::open(&out_dir.join("metrics.jsonl"), resumed_from)?;
    let mut tb = EventWriter::create(&out_dir.join("tensorboard"))?;
    let recipe_text = resolved_recipe_toml(r);
    let save = |step: u64,
                opt: &Optimizer,
                cursor: &Cursor,
                metrics: &Map<String, Value>,
                best: Option<(f64, u64)>|
     -> Result<PathBuf> {
        let state = TrainState {
            step,
            cursor: cursor.position,
            optimizer_step: opt.steps(),
            next_lr: optim_cfg.lr_at(step, tc.steps),
            rng_cpu: checkpoint::cpu_rng_hex()?,
            metrics: metrics.clone(),
            best,
            seed: r.run.seed,
        };
        let dir = checkpoint::save(&out_dir, &state, &params, opt.state(), &recipe_text)?;
        checkpoint::prune(&out_dir, ck_cfg.keep_last, best.map(|b| b.1))?;
        Ok(dir)
    };
    let bar = if opts.progress && !opts.quiet {
        let pb = indicatif::ProgressBar::new(tc.steps);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_position(step);
        Some(pb)
    } else {
        None
    };
    let mut last_ckpt = None;
    let mut final_loss = None;
    let mut interrupted = false;
    let tokens_per_micro = if setup.data_cfg.is_lm() {
        tc.batch_size * setup.data_cfg.seq_len.unwrap_or(1)
    } else {
        tc.batch_size
    };
    let mut window_start = Instant::now();
    let mut window_tokens = 0usize;
    while step < tc.steps {
        let lr = optim_cfg.lr_at(step, tc.steps);
        opt.zero_grad();
        let mut loss_sum = 0.0;
        for micro in 0..tc.grad_accum {
            let idx = cursor.next_batch(tc.batch_size);
            let items: Vec<&Example> = idx.iter().map(|&i| &setup.data.train[i]).collect();
            let (x, t, m) = setup.batch(&items)?;
            let stream = RandomStream::new(mix(
                mix(r.run.seed, 0xD409),
                step * tc.grad_accum as u64 + micro as u64,
            ));
            let side = SideInputs::new().with("random_stream", SideValue::Stream(stream));
            let y = setup.forward(x, &side)?;
            let (loss, _, _, _) = setup.loss(&y, &t, &m)?;
            let scaled = loss.f_div_scalar(tc.grad_accum as f64).ctx("loss")?;
            scaled.f_backward().ctx("backward")?;
            loss_sum += loss.f_double_value(&[]).ctx("loss")?;
            window_tokens += tokens_per_micro;
        }
        let loss = loss_sum / tc.grad_accum as f64;
        let grad_norm = opt.grad_norm()?;
        if tc.nan_watchdog && (!loss.is_finite() || !grad_norm.is_finite()) {
            let what = if !loss.is_finite() {
                format!("the loss is {loss}")
            } else {
                match opt.first_bad_grad()? {
                    Some(l) => format!("the gradient of `{l}` is not finite"),
                    None => format!("the gradient norm is {grad_norm}"),
                }
            };
            if let Some(pb) = &bar {
                pb.abandon();
            }
            let keep = checkpoint::latest(&out_dir)
                .map(|(s, p)| format!("; the last good checkpoint is {} (step {s})", p.display()))
                .unwrap_or_default();
            return Err(Error::Run(format!(
                "step {}: {what}; stopping (NaN watchdog){keep}",
                step + 1
            )));
        }
        if let Some(c) = optim_cfg.clip_grad_norm {
            opt.clip(grad_norm, c)?;
        }
        opt.step(lr)?;
        step += 1;
        final_loss = Some(loss);
        let mut line = Map::new();
        let log_now = step.is_multiple_of(tc.log_every) || step == tc.steps;
        if log_now {
            let secs = window_start.elapsed().as_secs_f64().max(1e-9);
            let tps = window_tokens as f64 / secs;
            window_start = Instant::now();
            window_tokens = 0;
            line.insert("step".into(), json!(step));
            line.insert("loss".into(), json!(loss));
            line.insert("lr".into(), json!(lr));
            line.insert("grad_norm".into(), json!(grad_norm));
            line.insert("tokens_per_s".into(), json!(tps));
            tb.scalars(
                step as i64,
                &[
                    ("train/loss".into(), loss),
                    ("train/lr".into(), lr),
                    ("train/grad_norm".into(), grad_norm),
                    ("train/tokens_per_s".into(), tps),
                ],
            )?;
            let msg =
                format!("loss {loss:.4}  lr {lr:.2e}  grad_norm {grad_norm:.3}  tok/s {tps:.0}");
            match &bar {
                Some(pb) => pb.set_message(msg),
                None => say(format!("step {step:>6}/{}  {msg}", tc.steps)),
            }
        }
        if let Some(pb) = &bar {
            pb.set_position(step);
        }
        let eval_now =
            (tc.eval_every > 0 && step.is_multiple_of(tc.eval_every)) || step == tc.steps;
        let mut new_best = false;
        if eval_now {
            last_eval = setup.evaluate()?;
            if !line.contains_key("step") {
                line.insert("step".into(), json!(step));
            }
            let mut scal = vec![];
            for (k, v) in &last_eval {
                line.insert(k.clone(), v.clone());
                if let Some(f) = v.as_f64() {
                    scal.push((k.replace("eval.", "eval/"), f));
                }
            }
            tb.scalars(step as i64, &scal)?;
            match &bar {
                Some(pb) => pb.println(format!("step {step}: {}", fmt_metrics(&last_eval))),
                None => say(format!(
                    "step {step:>6}/{}  {}",
                    tc.steps,
                    fmt_metrics(&last_eval)
                )),
            }
            if let Some(metric) = &ck_cfg.keep_best {
                if let Some(v) = last_eval.get(metric).and_then(|v| v.as_f64()) {
                    let better = match best {
                        None => true,
                        Some((b, _)) => {
                            if ck_cfg.maximize() {
                                v > b
                            } else {
                                v < b
                            }
                        }
                    };
                    if better {
                        best = Some((v, step));
                        new_best = true;
                    }
                }
            }
        }
        if !line.is_empty() {
            metrics.write(&line)?;
        }
        let stop = STOP.load(Ordering::SeqCst);
        let ckpt_now = new_best
            || step == tc.steps
            || stop
            || ck_cfg
                .every_steps
                .map(|e| step.is_multiple_of(e))
                .unwrap_or(false);
        if ckpt_now {
            last_ckpt = Some(save(step, &opt, &cursor, &last_eval, best)?);
        }
        if stop {
            interrupted = true;
            break;
        }
    }
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    if last_ckpt.is_none() {
        last_ckpt = checkpoint::latest(&out_dir).map(|(_, p)| p);
    }
    Ok(Summary {
        name: r.run.name.clone(),
        out_dir,
        device: device_name(setup.device),
        steps: step,
        total_steps: tc.steps,
        resumed_from,
        final_loss,
        eval: last_eval,
        checkpoint: last_ckpt,
        elapsed_s: start.elapsed().as_secs_f64(),
        interrupted,
    })
}

/// Evaluates a checkpoint (default: the newest of the run).
pub fn eval(
    recipe: Recipe,
    registry: &crate::tree::Registry,
    checkpoint_dir: Option<&Path>,
) -> Result<(PathBuf, Map<String, Value>)> {
    let out_dir = recipe.run.out_dir.clone();
    let dir = match checkpoint_dir {
        Some(d) => d.to_path_buf(),
        None => checkpoint::latest(&out_dir)
            .map(|(_, p)| p)
            .ok_or_else(|| {
                Error::Config(format!(
                    "no checkpoint in {}",
                    checkpoint::dir_of(&out_dir).display()
                ))
            })?,
    };
    if !dir.join("state.json").is_file() {
        return Err(Error::Config(format!(
            "{} is not a checkpoint (no state.json)",
            dir.display()
        )));
    }
    let setup = Setup::new(recipe, registry)?;
    checkpoint::load(&dir, &setup.tree.parameters())?;
    Ok((dir, setup.evaluate()?))
}
