//! The trainer: one optimizer step at a time (gradient accumulation, the NaN watchdog,
//! clipping), evaluation, checkpoints, and resuming from the newest checkpoint; and the loop
//! that logs metrics and TensorBoard events and honours a stop signal.

use super::checkpoint::{self, TrainState};
use super::metrics::MetricsWriter;
use super::optim::Optimizer;
use super::report::Reporter;
use super::session::Session;
use super::tensorboard::EventWriter;
use super::{StopSignal, Summary, TrainOptions};
use crate::backend::device_name;
use crate::base::seed::mix;
use crate::base::{Error, Result, TorchContext};
use crate::data::{Cursor, Example};
use crate::params::{Parameter, RandomStream};
use crate::spec::{OptimConfig, RunSpec};
use crate::tree::SideValue;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tch::Tensor;

/// A run in progress: the session, the optimizer and where the run is.
pub struct Trainer {
    pub session: Session,
    optim: OptimConfig,
    opt: Optimizer,
    params: Vec<Parameter>,
    /// Optimizer steps completed.
    pub step: u64,
    cursor: Cursor,
    best: Option<(f64, u64)>,
    /// The last eval metrics.
    pub last_eval: Map<String, Value>,
    /// The step this invocation resumed from.
    pub resumed_from: Option<u64>,
    report: Reporter,
    started: Instant,
    /// Tokens (or examples) trained on since the last logged step, and since when.
    window: (usize, Instant),
    /// The frozen parameters this run trains against (recorded in each checkpoint).
    base: Option<checkpoint::BaseRecord>,
    /// One `pzt train` per run directory.
    _lock: super::lock::RunLock,
    /// `--profile`: which steps to profile.
    profile: Option<super::ProfileOptions>,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy)]
pub struct StepOutcome {
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

impl Trainer {
    /// Sets up the run and resumes it from the newest complete checkpoint of its run
    /// directory, if there is one.
    pub fn new(spec: RunSpec, opts: &TrainOptions) -> Result<Trainer> {
        let started = Instant::now();
        let optim = spec
            .optim
            .clone()
            .ok_or_else(|| Error::Config("training needs an `[optim]` section".into()))?;
        let session = Session::new(spec)?;
        let out_dir = session.spec.run.out_dir.clone();
        std::fs::create_dir_all(&out_dir).map_err(|source| Error::Io {
            path: out_dir.display().to_string(),
            source,
        })?;
        let lock = super::lock::RunLock::take(&out_dir)?;
        lock.clean_debris(&checkpoint::dir_of(&out_dir));
        let params = session.tree.trainable_parameters();
        let opt = Optimizer::new(params.clone(), optim.clone());
        let cursor = Cursor::new(session.spec.run.seed, session.data.train.len(), 0);
        let report = Reporter::new(opts, session.spec.train.steps);
        let base = checkpoint::BaseRecord::of(&session.tree, session.spec.model_source.as_deref())?;
        let mut t = Trainer {
            session,
            optim,
            opt,
            params,
            step: 0,
            cursor,
            best: None,
            last_eval: Map::new(),
            resumed_from: None,
            report,
            started,
            window: (0, Instant::now()),
            base,
            _lock: lock,
            profile: opts.profile.clone(),
        };
        t.resume()?;
        if t.step < t.spec().train.steps {
            super::runs::record_environment(&out_dir, t.step, &device_name(t.session.device))?;
        }
        Ok(t)
    }

    fn spec(&self) -> &RunSpec {
        &self.session.spec
    }

    /// Continues from the newest checkpoint, if any (and says which); else says what starts.
    fn resume(&mut self) -> Result<()> {
        let run = self.spec().run.clone();
        let steps = self.spec().train.steps;
        let Some((s, dir)) = checkpoint::latest(&run.out_dir) else {
            let data = &self.session.data;
            self.report.say(format!(
                "training `{}`: {} parameters{} on {}, {} train / {} eval examples{}",
                run.name,
                crate::base::text::grouped(self.session.tree.num_params()),
                match &self.base {
                    Some(_) => format!(
                        " ({} trainable)",
                        crate::base::text::grouped(
                            self.params.iter().map(|p| p.numel()).sum::<i64>()
                        )
                    ),
                    None => String::new(),
                },
                device_name(self.session.device),
                data.train.len(),
                data.eval.len(),
                if self.session.data_cached {
                    " (tokenized data from cache)"
                } else {
                    ""
                }
            ));
            return Ok(());
        };
        let (state, opt_state) = checkpoint::load(&dir, &self.params)?;
        checkpoint::verify_base(&dir, &state, &self.session.tree)?;
        if state.step > steps {
            return Err(Error::Config(format!(
                "{} is at step {}, past [train] steps = {steps}; raise steps or use another out_dir",
                dir.display(),
                state.step,
            )));
        }
        self.opt
            .load_state(state.optimizer_step, opt_state)
            .map_err(|e| Error::Config(format!("checkpoint {}: {e}", dir.display())))?;
        checkpoint::set_cpu_rng_hex(&state.rng_cpu)?;
        self.step = state.step;
        self.cursor = Cursor::new(run.seed, self.session.data.train.len(), state.cursor);
        self.best = state.best;
        self.last_eval = state.metrics.clone();
        self.resumed_from = Some(s);
        self.report.say(format!(
            "resuming `{}` from {} (step {s} of {steps})",
            run.name,
            dir.display(),
        ));
        Ok(())
    }

    /// One optimizer step: `grad_accum` micro-batches forward and backward, the NaN watchdog,
    /// clipping, the update.
    pub fn step(&mut self) -> Result<StepOutcome> {
        let (seed, steps) = (self.spec().run.seed, self.spec().train.steps);
        let (batch_size, grad_accum) = (self.spec().train.batch_size, self.spec().train.grad_accum);
        let lr = self.optim.lr_at(self.step, steps);
        self.opt.zero_grad()?;
        // The micro-batch losses add up on the device, in float64 (the same sum as on the host),
        // and are read once per step.
        let mut loss_sum: Option<Tensor> = None;
        for micro in 0..grad_accum {
            let idx = self.cursor.next_batch(batch_size);
            let owned: Vec<Example> = idx
                .iter()
                .map(|&i| self.session.data.train.get(i))
                .collect::<Result<_>>()?;
            let items: Vec<&Example> = owned.iter().collect();
            let b = self.session.task.batch(&items, self.session.device)?;
            let stream = RandomStream::new(mix(
                mix(seed, 0xD409),
                self.step * grad_accum as u64 + micro as u64,
            ));
            let side = b
                .side
                .clone()
                .with("random_stream", SideValue::Stream(stream));
            let y = self.session.forward(b.x.clone(), &side)?;
            let loss = self.session.task.train_loss(&y, &b)?;
            let scaled = loss.f_div_scalar(grad_accum as f64).ctx("loss")?;
            scaled.f_backward().ctx("backward")?;
            let l = loss.detach().f_to_kind(tch::Kind::Double).ctx("loss")?;
            loss_sum = Some(match loss_sum {
                Some(acc) => acc.f_add(&l).ctx("loss")?,
                None => l,
            });
            self.window.0 += self.session.task.tokens_per_batch(batch_size);
        }
        let loss_sum = match loss_sum {
            Some(t) => t.f_double_value(&[]).ctx("loss")?,
            None => 0.0,
        };
        let loss = loss_sum / grad_accum as f64;
        let grad_norm = self.opt.grad_norm()?;
        if self.spec().train.nan_watchdog && (!loss.is_finite() || !grad_norm.is_finite()) {
            return Err(self.watchdog(loss, grad_norm)?);
        }
        if let Some(c) = self.optim.clip_grad_norm {
            self.opt.clip(grad_norm, c)?;
        }
        self.opt.step(lr)?;
        self.step += 1;
        if self.step.is_multiple_of(256) {
            self.session.data.train.release();
        }
        Ok(StepOutcome {
            loss,
            lr,
            grad_norm,
        })
    }

    /// The error that stops a run whose loss or gradient is not finite.
    fn watchdog(&self, loss: f64, grad_norm: f64) -> Result<Error> {
        let what = if !loss.is_finite() {
            format!("the loss is {loss}")
        } else {
            match self.opt.first_bad_grad()? {
                Some(l) => format!("the gradient of `{l}` is not finite"),
                None => format!("the gradient norm is {grad_norm}"),
            }
        };
        self.report.abandon();
        let keep = checkpoint::latest(&self.spec().run.out_dir)
            .map(|(s, p)| format!("; the last good checkpoint is {} (step {s})", p.display()))
            .unwrap_or_default();
        Ok(Error::Run(format!(
            "step {}: {what}; stopping (NaN watchdog){keep}",
            self.step + 1
        )))
    }

    /// The eval metrics of the model as it is.
    pub fn evaluate(&self) -> Result<Map<String, Value>> {
        self.session.evaluate()
    }

    /// Writes a checkpoint of the current step (and prunes old ones); returns its directory.
    pub fn checkpoint(&self) -> Result<PathBuf> {
        let spec = self.spec();
        let state = TrainState {
            step: self.step,
            cursor: self.cursor.position,
            optimizer_step: self.opt.steps(),
            next_lr: self.optim.lr_at(self.step, spec.train.steps),
            rng_cpu: checkpoint::cpu_rng_hex()?,
            metrics: self.last_eval.clone(),
            best: self.best,
            seed: spec.run.seed,
            base: self.base.clone(),
        };
        let out = &spec.run.out_dir;
        let dir = checkpoint::save(
            out,
            &state,
            &self.params,
            self.opt.state(),
            &spec.recipe_toml,
        )?;
        checkpoint::prune(out, spec.checkpoint.keep_last, self.best.map(|b| b.1))?;
        Ok(dir)
    }

    /// Whether `metrics` hold a new best value of `[checkpoint] keep_best` (and records it).
    fn note_best(&mut self) -> bool {
        let ck = &self.session.spec.checkpoint;
        let Some(v) = ck
            .keep_best
            .as_ref()
            .and_then(|m| self.last_eval.get(m))
            .and_then(|v| v.as_f64())
        else {
            return false;
        };
        let better = match self.best {
            None => true,
            Some((b, _)) if ck.maximize() => v > b,
            Some((b, _)) => v < b,
        };
        if better {
            self.best = Some((v, self.step));
        }
        better
    }

    /// The metrics line of a logged step (and its TensorBoard scalars and printed line).
    fn log_step(
        &mut self,
        o: &StepOutcome,
        line: &mut Map<String, Value>,
        tb: &mut EventWriter,
    ) -> Result<()> {
        let secs = self.window.1.elapsed().as_secs_f64().max(1e-9);
        let tps = self.window.0 as f64 / secs;
        self.window = (0, Instant::now());
        line.insert("step".into(), json!(self.step));
        line.insert("loss".into(), json!(o.loss));
        line.insert("lr".into(), json!(o.lr));
        line.insert("grad_norm".into(), json!(o.grad_norm));
        line.insert("tokens_per_s".into(), json!(tps));
        tb.scalars(
            self.step as i64,
            &[
                ("train/loss".into(), o.loss),
                ("train/lr".into(), o.lr),
                ("train/grad_norm".into(), o.grad_norm),
                ("train/tokens_per_s".into(), tps),
            ],
        )?;
        self.report.step(
            self.step,
            format!(
                "loss {:.4}  lr {:.2e}  grad_norm {:.3}  tok/s {tps:.0}",
                o.loss, o.lr, o.grad_norm
            ),
        );
        Ok(())
    }

    /// Evaluates at this step, adding the metrics to `line`; returns whether they are a new
    /// best.
    fn eval_step(&mut self, line: &mut Map<String, Value>, tb: &mut EventWriter) -> Result<bool> {
        self.last_eval = self.evaluate()?;
        if self.last_eval.is_empty() {
            return Ok(false); // no eval split (eval_fraction = 0): nothing to log
        }
        if !line.contains_key("step") {
            line.insert("step".into(), json!(self.step));
        }
        let mut scalars = vec![];
        for (k, v) in &self.last_eval {
            line.insert(k.clone(), v.clone());
            if let Some(f) = v.as_f64() {
                scalars.push((k.replace("eval.", "eval/"), f));
            }
        }
        tb.scalars(self.step as i64, &scalars)?;
        self.report.eval(self.step, &self.last_eval);
        Ok(self.note_best())
    }

    /// Trains until `[train] steps` or until `stop` is set, logging, evaluating and
    /// checkpointing as the spec says.
    pub fn run(mut self, stop: &StopSignal) -> Result<Summary> {
        let out_dir = self.spec().run.out_dir.clone();
        let (steps, log_every, eval_every) = (
            self.spec().train.steps,
            self.spec().train.log_every,
            self.spec().train.eval_every,
        );
        let mut metrics = MetricsWriter::open(&out_dir.join("metrics.jsonl"), self.resumed_from)?;
        // Opened at the first step: a finished run asked to train again writes no event file.
        let mut tb: Option<EventWriter> = None;
        self.report.start_bar(self.step);
        let mut last_ckpt = None;
        let mut final_loss = None;
        let mut interrupted = false;
        self.window = (0, Instant::now());
        let (mut ran, mut profiler, mut profile) = (0u64, None, None);
        while self.step < steps {
            if tb.is_none() {
                tb = Some(EventWriter::create(&out_dir.join("tensorboard"))?);
            }
            let Some(tb) = tb.as_mut() else { break };
            if ran == 1 && self.profile.is_some() {
                profiler = Some(crate::backend::Profiler::start(true)?);
            }
            let o = self.step()?;
            ran += 1;
            if self.profile.as_ref().is_some_and(|p| ran == 1 + p.steps) {
                profile = self.finish_profile(profiler.take())?;
            }
            final_loss = Some(o.loss);
            let step = self.step;
            let mut line = Map::new();
            if step.is_multiple_of(log_every) || step == steps {
                self.log_step(&o, &mut line, tb)?;
            }
            self.report.position(step);
            let new_best = if (eval_every > 0 && step.is_multiple_of(eval_every)) || step == steps {
                self.eval_step(&mut line, tb)?
            } else {
                false
            };
            if !line.is_empty() {
                metrics.write(&line)?;
            }
            let stopping = stop.load(Ordering::SeqCst);
            let every = self.spec().checkpoint.every_steps;
            if new_best
                || step == steps
                || stopping
                || every.is_some_and(|e| step.is_multiple_of(e))
            {
                last_ckpt = Some(self.checkpoint()?);
            }
            if stopping {
                interrupted = true;
                break;
            }
        }
        if profiler.is_some() {
            profile = self.finish_profile(profiler.take())?;
        }
        self.report.finish();
        if last_ckpt.is_none() {
            last_ckpt = checkpoint::latest(&out_dir).map(|(_, p)| p);
        }
        Ok(Summary {
            name: self.spec().run.name.clone(),
            out_dir,
            device: device_name(self.session.device),
            steps: self.step,
            total_steps: steps,
            resumed_from: self.resumed_from,
            final_loss,
            eval: self.last_eval.clone(),
            checkpoint: last_ckpt,
            elapsed_s: self.started.elapsed().as_secs_f64(),
            interrupted,
            profile,
        })
    }

    /// Stops the profiler of `--profile` (if it ran), writes its trace and returns its tables.
    fn finish_profile(&self, p: Option<crate::backend::Profiler>) -> Result<Option<String>> {
        let (Some(p), Some(o)) = (p, &self.profile) else {
            return Ok(None);
        };
        let tables = p.stop(Some(&o.trace), 30)?;
        Ok(Some(format!(
            "profile of {} step(s), trace in {}:\n\n{tables}",
            o.steps.min(self.step),
            o.trace.display()
        )))
    }
}
