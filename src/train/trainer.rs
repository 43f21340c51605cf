//! The trainer: one optimizer step at a time (gradient accumulation, the gradient all-reduce of
//! a data-parallel run, the NaN watchdog, clipping), checkpoints, and resuming from the newest
//! checkpoint. The loop around it is in `looping.rs`.

use super::optim::Optimizer;
use super::report::Reporter;
use super::session::Session;
use super::world::World;
use super::TrainOptions;
use crate::backend::device_name;
use crate::backend::dist::ReduceOp;
use crate::base::seed::mix;
use crate::base::{Error, Result, TorchContext};
use crate::data::{Cursor, Example};
use crate::params::{Parameter, RandomStream};
use crate::run::checkpoint::{self, TrainState};
use crate::spec::{OptimConfig, RunSpec};
use crate::tree::SideValue;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Instant;
use tch::Tensor;

/// A checkpoint further along than the recipe's steps: continue with more, or start a new run.
fn past_steps(dir: &std::path::Path, at: u64, steps: u64, name: &str) -> Result<()> {
    if at <= steps {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{} is at step {at}, past [train] steps = {steps}; raise steps to continue this run, or start a new one in its own directory: --set 'run.name=\"{name}-2\"' (when the recipe sets no out_dir) or --set 'run.out_dir=\"...\"'",
        dir.display(),
    )))
}

/// A run in progress: the session, the optimizer and where the run is.
pub struct Trainer {
    pub session: Session,
    pub(super) optim: OptimConfig,
    opt: Optimizer,
    params: Vec<Parameter>,
    /// Optimizer steps completed.
    pub step: u64,
    cursor: Cursor,
    pub(super) best: Option<(f64, u64)>,
    /// The last eval metrics.
    pub last_eval: Map<String, Value>,
    /// The step this invocation resumed from.
    pub resumed_from: Option<u64>,
    pub(super) report: Reporter,
    pub(super) started: Instant,
    /// Tokens (or examples) trained on since the last logged step, and since when.
    pub(super) window: (usize, Instant),
    /// The frozen parameters this run trains against (recorded in each checkpoint).
    base: Option<checkpoint::BaseRecord>,
    /// One `pzt train` per run directory (held by rank 0).
    _lock: Option<crate::run::lock::RunLock>,
    /// `--profile`: which steps to profile (rank 0).
    pub(super) profile: Option<super::ProfileOptions>,
    /// The ranks of a data-parallel run (one process: a world of 1).
    pub world: World,
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
    /// In a data-parallel run every rank calls this; rank 0 sets up first (it takes the run
    /// directory and writes the data cache), the others after it.
    pub fn new(spec: RunSpec, opts: &TrainOptions, mut world: World) -> Result<Trainer> {
        let started = Instant::now();
        let optim = spec
            .optim
            .clone()
            .ok_or_else(|| Error::Config("training needs an `[optim]` section".into()))?;
        let out_dir = spec.run.out_dir.clone();
        let mut lock = None;
        let mut pin_failed = None;
        if world.is_main() {
            std::fs::create_dir_all(&out_dir).map_err(|source| Error::Io {
                path: out_dir.display().to_string(),
                source,
            })?;
            let l = crate::run::lock::RunLock::take(&out_dir)?;
            l.clean_debris(&checkpoint::dir_of(&out_dir));
            lock = Some(l);
            // A checkpoint in a directory this user cannot write (a shared one) can still be
            // started from; only its protection from the other run's pruning is lost: said once.
            if let Some(from) = &spec.model_checkpoint {
                pin_failed = crate::run::pin(from, &out_dir).err().map(|e| {
                    format!("warning: could not pin {} against its run's keep_last ({e}); that run may prune it", from.display())
                });
            }
        } else {
            world.barrier()?;
        }
        let session = Session::on_rank(spec, world.local_rank)?;
        if world.is_main() {
            world.barrier()?;
        }
        let params = session.tree.trainable_parameters();
        if params.is_empty() {
            return Err(Error::Config(
                "nothing is trainable: every parameter of the model is frozen (by `[strategy]` or a `[[patch]]` freeze); leave some trainable, e.g. `[strategy] kind = \"full\"` or LoRA adapters".into(),
            ));
        }
        if world.distributed() {
            let values: Vec<Tensor> = params.iter().map(|p| p.value()).collect();
            world.attach(&values)?;
        }
        let opt = Optimizer::new(params.clone(), optim.clone());
        let cursor = Cursor::new(session.spec.run.seed, session.data.train.len(), 0);
        let mut opts = opts.clone();
        if !world.is_main() {
            (opts.progress, opts.quiet, opts.profile) = (false, true, None);
        }
        let report = Reporter::new(&opts, session.spec.train.steps);
        if let Some(w) = pin_failed {
            report.say(w);
        }
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
            world,
        };
        t.resume()?;
        t.agree_on_start()?;
        if t.step < t.spec().train.steps && t.world.is_main() {
            let world = (t.world.size, t.world.backend);
            crate::run::environment::record_environment(
                &out_dir,
                t.step,
                &device_name(t.session.device),
                world,
            )?;
        }
        Ok(t)
    }

    pub(super) fn spec(&self) -> &RunSpec {
        &self.session.spec
    }

    /// Continues from the newest checkpoint, if any (and says which); else says what starts.
    fn resume(&mut self) -> Result<()> {
        let run = self.spec().run.clone();
        let steps = self.spec().train.steps;
        let latest = checkpoint::latest(&run.out_dir);
        if self.world.is_main() {
            let from = latest.as_ref().map_or(0, |(s, _)| *s);
            crate::run::divergence::check_divergence(&run.out_dir, from, &self.spec().recipe_toml)?;
        }
        let Some((s, dir)) = latest else {
            let data = &self.session.data;
            self.report.say(format!(
                "training `{}`: {} parameters{} on {}, {} train / {} eval examples{}{}",
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
                },
                self.world_line(),
            ));
            return Ok(());
        };
        super::resume_checks::check_same_data(&dir, &self.spec().recipe_toml)?;
        let (state, opt_state) = checkpoint::load(&dir, &self.params)?;
        checkpoint::verify_base(&dir, &state, &self.session.tree)?;
        past_steps(&dir, state.step, steps, &run.name)?;
        self.opt
            .load_state(state.optimizer_step, opt_state)
            .map_err(|e| Error::Config(format!("checkpoint {}: {e}", dir.display())))?;
        if state.world_size != self.world.size as u64 {
            return Err(Error::Config(format!(
                "{} was written by a run on {} process(es), and this one has {}: resume it on {} (`pzt train --nproc {}`, or WORLD_SIZE={}), or train into another out_dir",
                dir.display(),
                state.world_size,
                self.world.size,
                state.world_size,
                state.world_size,
                state.world_size,
            )));
        }
        let rng = match self.world.rank {
            0 => Some(&state.rng_cpu),
            r => state.rng_ranks.get(r - 1),
        }
        .ok_or_else(|| {
            Error::Config(format!(
                "{}: no generator state for rank {}",
                dir.display(),
                self.world.rank
            ))
        })?;
        checkpoint::set_cpu_rng_hex(rng)?;
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
        let (rank, world) = (self.world.rank, self.world.size);
        let dist = self.world.distributed();
        self.opt.zero_grad()?;
        // The micro-batch losses add up on the device, in float64 (the same sum as on the host),
        // and are read once per step.
        let mut loss_sum: Option<Tensor> = None;
        for micro in 0..grad_accum {
            // The global micro-batch (what one process with batch_size x world would take);
            // this rank trains on its slice, by position.
            let idx = self.cursor.next_batch(batch_size * world);
            let owned: Vec<Example> = idx[rank * batch_size..(rank + 1) * batch_size]
                .iter()
                .map(|&i| self.session.data.train.get(i))
                .collect::<Result<_>>()?;
            let items: Vec<&Example> = owned.iter().collect();
            let b = self.session.task.batch(&items, self.session.device)?;
            let mut stream_seed = mix(
                mix(seed, 0xD409),
                self.step * grad_accum as u64 + micro as u64,
            );
            if world > 1 {
                stream_seed = mix(stream_seed, rank as u64); // each rank its own dropout
            }
            let stream = RandomStream::new(stream_seed);
            let side = b
                .side
                .clone()
                .with("random_stream", SideValue::Stream(stream));
            let y = self.session.forward(b.x.clone(), &side)?;
            let mut loss = self.session.task.train_loss(&y, &b)?;
            if dist {
                // This rank's mean over its c targets, weighted by c / (all ranks' targets): the
                // ranks' summed gradients are those of the global batch's mean.
                loss = loss.f_mul_scalar(self.target_share(&b)?).ctx("loss")?;
            }
            let scaled = loss.f_div_scalar(grad_accum as f64).ctx("loss")?;
            if dist && micro + 1 == grad_accum {
                // The last backward pass of the step sums the gradients over the ranks as
                // they arrive.
                self.world.arm();
            }
            scaled.f_backward().ctx("backward")?;
            let l = loss.detach().f_to_kind(tch::Kind::Double).ctx("loss")?;
            loss_sum = Some(match loss_sum {
                Some(acc) => acc.f_add(&l).ctx("loss")?,
                None => l,
            });
            self.window.0 += self.session.task.tokens_per_batch(batch_size * world);
        }
        if dist {
            self.world.finish_gradients()?;
        }
        let loss_sum = match loss_sum {
            Some(t) if dist => self.world.reduce_scalar(&t, ReduceOp::Sum)?,
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
        if self.world.is_main() {
            crate::run::divergence::record_divergence(
                &self.spec().run.out_dir,
                self.step + 1,
                &what,
                &self.spec().recipe_toml,
            );
        }
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

    /// This rank's share of a micro-batch's loss targets: its count over all ranks' count.
    fn target_share(&self, b: &super::task::Batch) -> Result<f64> {
        let mine = b
            .mask
            .f_sum(tch::Kind::Double)
            .and_then(|c| c.f_double_value(&[]))
            .ctx("loss targets")?;
        let all = self.world.reduce_values(&[mine], ReduceOp::Sum)?[0];
        Ok(mine / all.max(1.0))
    }

    /// The start line's data-parallel part: the world size and the global batch.
    fn world_line(&self) -> String {
        let t = &self.spec().train;
        if !self.world.distributed() {
            return String::new();
        }
        format!(
            "; {} process{} ({}), global batch {} ({} x {} x {})",
            self.world.size,
            if self.world.size == 1 { "" } else { "es" },
            self.world.backend,
            self.world.size * t.batch_size * t.grad_accum,
            self.world.size,
            t.batch_size,
            t.grad_accum
        )
    }

    /// Every rank must start from the same place with the same plan (`agreement.rs`).
    fn agree_on_start(&self) -> Result<()> {
        if !self.world.distributed() {
            return Ok(());
        }
        let facts = super::agreement::start_facts(
            &self.session,
            &self.params,
            self.step,
            self.base.as_ref(),
        )?;
        super::agreement::agree(&self.world, &facts)
    }

    /// Writes a checkpoint of the current step (and prunes old ones); returns its directory.
    /// Every rank of a data-parallel run calls it (their generator states go in); rank 0
    /// writes, and the others get `None`.
    pub fn checkpoint(&self) -> Result<Option<PathBuf>> {
        let spec = self.spec();
        let rng = checkpoint::cpu_rng_hex()?;
        let mut ranks = vec![];
        if self.world.distributed() {
            ranks = self.world.gather_bytes(rng.as_bytes())?;
        }
        if !self.world.is_main() {
            return Ok(None);
        }
        let rng_ranks = ranks
            .iter()
            .skip(1)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        let state = TrainState {
            step: self.step,
            cursor: self.cursor.position,
            optimizer_step: self.opt.steps(),
            next_lr: self.optim.lr_at(self.step, spec.train.steps),
            rng_cpu: rng,
            metrics: self.last_eval.clone(),
            best: self.best,
            seed: spec.run.seed,
            base: self.base.clone(),
            world_size: self.world.size as u64,
            rng_ranks,
        };
        let out = &spec.run.out_dir;
        let dir = checkpoint::save(
            out,
            &state,
            &self.params,
            self.opt.state(),
            &spec.recipe_toml,
        )?;
        crate::run::prune(out, spec.checkpoint.keep_last, self.best.map(|b| b.1))?;
        Ok(Some(dir))
    }
}
