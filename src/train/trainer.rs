//! The step loop: one optimizer step at a time (gradient accumulation, the NaN watchdog,
//! clipping, the update), and the loop that steps until `[train] steps` or a stop request,
//! evaluating when due. It drives the other parts: the execution (`execution.rs`: one process
//! or a rank of several), the checkpointer (`checkpointer.rs`: the run directory, checkpoints
//! and resuming), the observers (`observers.rs`: metrics, events, the printout) and the
//! profiler of `--profile` (`profiling.rs`).

use super::checkpointer::Checkpointer;
use super::execution::Execution;
use super::observers::Observers;
use super::optim::Optimizer;
use super::profiling::Profiling;
use super::session::Session;
use super::world::World;
use super::{StopSignal, Summary, TrainOptions};
use crate::backend::device_name;
use crate::base::seed::mix;
use crate::base::{Error, Result, TorchContext};
use crate::data::{Cursor, Example};
use crate::layers::moe::{collect_router_logits, load_balancing_loss};
use crate::params::{Parameter, RandomStream};
use crate::run::checkpoint::{self, TrainState};
use crate::spec::{OptimConfig, RunSpec};
use crate::tree::SideValue;
use serde_json::{Map, Value};
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
    /// The last eval metrics.
    pub last_eval: Map<String, Value>,
    /// The step this invocation resumed from.
    pub resumed_from: Option<u64>,
    started: Instant,
    /// Tokens (or examples) trained on since the last logged step, and since when.
    window: (usize, Instant),
    /// One process, or one rank of a data-parallel run.
    exec: Execution,
    /// The run directory: checkpoints, the best one, resuming.
    ckpt: Checkpointer,
    /// What is told about the run (rank 0).
    observers: Observers,
    /// `--profile` (rank 0).
    profiling: Profiling,
    /// Gives the memory a step freed back to the kernel between steps.
    freed: crate::base::memory::BetweenSteps,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy)]
pub struct StepOutcome {
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// The routers' load-balancing loss (a mixture of experts), unweighted: `loss` includes
    /// it times its coefficient.
    pub aux_loss: Option<f64>,
    /// A preference objective and its sums over the step (every rank's).
    pub pref: Option<(crate::spec::ObjectiveKind, super::preference::PrefSums)>,
}

impl StepOutcome {
    /// A preference objective's metrics of the step (`rewards.chosen`, ...; not `loss`).
    pub fn preference_metrics(&self) -> Vec<(String, f64)> {
        match &self.pref {
            Some((kind, s)) => s
                .metrics(*kind, "")
                .into_iter()
                .filter(|(k, _)| k != "loss")
                .collect(),
            None => vec![],
        }
    }
}

impl Trainer {
    /// Sets up the run and resumes it from the newest complete checkpoint of its run
    /// directory, if there is one.
    /// In a data-parallel run every rank calls this; rank 0 sets up first (it takes the run
    /// directory and writes the data cache), the others after it.
    pub fn new(spec: RunSpec, opts: &TrainOptions, world: World) -> Result<Trainer> {
        let started = Instant::now();
        let optim = spec
            .optim
            .clone()
            .ok_or_else(|| Error::Config("training needs an `[optim]` section".into()))?;
        let mut exec = Execution::new(world);
        let (main, local_rank) = (exec.is_main(), exec.local_rank());
        let (mut ckpt, pin_failed, session) = exec.in_turn(|| {
            let (ckpt, pin_failed) = Checkpointer::take(&spec, main)?;
            Ok((ckpt, pin_failed, Session::on_rank(spec, local_rank)?))
        })?;
        let coef = session.spec.train.router_aux_loss_coef;
        crate::layers::moe::check_trainable(&session.tree, coef)?;
        let params = session.tree.trainable_parameters();
        if params.is_empty() {
            return Err(Error::Config(
                "nothing is trainable: every parameter of the model is frozen (by `[strategy]` or a `[[patch]]` freeze); leave some trainable, e.g. `[strategy] kind = \"full\"` or LoRA adapters".into(),
            ));
        }
        exec.attach(&params)?;
        let opt = Optimizer::new(params.clone(), optim.clone());
        let cursor = Cursor::new(session.spec.run.seed, session.data.train.len(), 0);
        let (out_dir, steps) = (&session.spec.run.out_dir, session.spec.train.steps);
        let mut observers = Observers::new(main, opts, out_dir, steps);
        if let Some(w) = pin_failed {
            observers.note(w);
        }
        ckpt.record_base(&session)?;
        let mut t = Trainer {
            session,
            optim,
            opt,
            params,
            step: 0,
            cursor,
            last_eval: Map::new(),
            resumed_from: None,
            started,
            window: (0, Instant::now()),
            exec,
            ckpt,
            observers,
            profiling: Profiling::new(opts.profile.clone().filter(|_| main)),
            freed: crate::base::memory::BetweenSteps::new(
                crate::base::memory::RETURN_BETWEEN_STEPS_MS,
            ),
        };
        t.resume()?;
        t.start()?;
        Ok(t)
    }

    fn spec(&self) -> &RunSpec {
        &self.session.spec
    }

    /// Continues from the newest checkpoint, if any (and says which); else says what starts.
    fn resume(&mut self) -> Result<()> {
        let world = (self.exec.rank(), self.exec.size());
        let resumed = self
            .ckpt
            .resume(&self.session, &self.params, &mut self.opt, world)?;
        let Some(r) = resumed else {
            let line = self.start_line();
            self.observers.note(line);
            return Ok(());
        };
        let (seed, n) = (self.spec().run.seed, self.session.data.train.len());
        self.step = r.step;
        self.cursor = Cursor::new(seed, n, r.cursor);
        self.last_eval = r.metrics;
        self.resumed_from = Some(r.from);
        let line = format!(
            "resuming `{}` from {} (step {} of {})",
            self.spec().run.name,
            r.dir.display(),
            r.from,
            self.spec().train.steps,
        );
        self.observers.note(line);
        Ok(())
    }

    /// The line a run that starts from scratch says.
    fn start_line(&self) -> String {
        let data = &self.session.data;
        let trainable = match self.ckpt.base() {
            Some(_) => format!(
                " ({} trainable)",
                crate::base::text::grouped(self.params.iter().map(|p| p.numel()).sum::<i64>())
            ),
            None => String::new(),
        };
        format!(
            "training `{}`: {} parameters{} on {}, {} train / {} eval examples{}{}",
            self.spec().run.name,
            crate::base::text::grouped(self.session.tree.num_params()),
            trainable,
            device_name(self.session.device),
            data.train.len(),
            data.eval.len(),
            if self.session.data_cached {
                " (tokenized data from cache)"
            } else {
                ""
            },
            self.exec.world_line(&self.spec().train),
        )
    }

    /// Before the first step: every rank agrees on where it starts (`agreement.rs`), and a run
    /// with steps to go records its environment.
    fn start(&self) -> Result<()> {
        self.exec.agree_on_start(|| {
            super::agreement::start_facts(&self.session, &self.params, self.step, self.ckpt.base())
        })?;
        if self.step < self.spec().train.steps {
            let device = device_name(self.session.device);
            self.ckpt
                .record_environment(self.step, &device, self.exec.world())?;
        }
        Ok(())
    }

    /// One optimizer step: `grad_accum` micro-batches forward and backward, the NaN watchdog,
    /// clipping, the update.
    pub fn step(&mut self) -> Result<StepOutcome> {
        let steps = self.spec().train.steps;
        let grad_accum = self.spec().train.grad_accum;
        let lr = self.optim.lr_at(self.step, steps);
        self.opt.zero_grad()?;
        // The micro-batch losses add up on the device, in float64 (the same sum as on the host),
        // and are read once per step.
        let mut loss_sum: Option<Tensor> = None;
        let mut aux_sum: Option<Tensor> = None;
        let add = |acc: Option<Tensor>, l: Tensor| -> Result<Option<Tensor>> {
            Ok(Some(match acc {
                Some(acc) => acc.f_add(&l).ctx("loss")?,
                None => l,
            }))
        };
        for micro in 0..grad_accum {
            let (l, aux) = self.micro_batch(micro)?;
            loss_sum = add(loss_sum, l)?;
            if let Some(a) = aux {
                aux_sum = add(aux_sum, a)?;
            }
        }
        self.exec.finish_gradients()?;
        let loss_sum = match loss_sum {
            Some(t) => self.exec.loss_sum(&t)?,
            None => 0.0,
        };
        let aux_loss = match aux_sum {
            Some(t) => Some(self.exec.loss_sum(&t)? / (grad_accum * self.exec.size()) as f64),
            None => None,
        };
        let loss = loss_sum / grad_accum as f64;
        let pref = match self.session.task.preference() {
            Some(pt) => {
                let v = self.exec.sum_values(&pt.take().values())?;
                let v: [f64; 14] = v
                    .try_into()
                    .map_err(|_| Error::Config("preference sums".into()))?;
                Some((
                    pt.objective.kind,
                    super::preference::PrefSums::from_values(&v),
                ))
            }
            None => None,
        };
        let grad_norm = self.opt.grad_norm()?;
        if self.spec().train.nan_watchdog && (!loss.is_finite() || !grad_norm.is_finite()) {
            return Err(self.watchdog(loss, grad_norm)?);
        }
        if let Some(c) = self.optim.clip_grad_norm {
            self.opt.clip(grad_norm, c)?;
        }
        self.opt.step(lr)?;
        self.freed.step_ended();
        self.step += 1;
        if self.step.is_multiple_of(256) {
            self.session.data.train.release();
        }
        Ok(StepOutcome {
            loss,
            lr,
            grad_norm,
            aux_loss,
            pref,
        })
    }

    /// Micro-batch `micro` of the step forward and backward; returns its loss (float64, on
    /// the device, as this process contributes it) and the routers' load-balancing loss.
    fn micro_batch(&mut self, micro: usize) -> Result<(Tensor, Option<Tensor>)> {
        let seed = self.spec().run.seed;
        let (batch_size, grad_accum) = (self.spec().train.batch_size, self.spec().train.grad_accum);
        // The global micro-batch (what one process with batch_size x world would take);
        // this process trains on its share.
        let global = self.exec.global_batch(batch_size);
        let idx = self.cursor.next_batch(global);
        let share: Vec<usize> = self.exec.share(&idx, batch_size).to_vec();
        let owned: Vec<Example> = share
            .iter()
            .map(|&i| self.session.data.train.get(i))
            .collect::<Result<_>>()?;
        let items: Vec<&Example> = owned.iter().collect();
        let mut b = self.session.task.batch(&items, self.session.device)?;
        self.session.attach_reference(&mut b, false, &share)?;
        let stream_seed = mix(
            mix(seed, 0xD409),
            self.step * grad_accum as u64 + micro as u64,
        );
        let stream = RandomStream::new(self.exec.stream_seed(stream_seed));
        let side = b
            .side
            .clone()
            .with("random_stream", SideValue::Stream(stream));
        let s = &self.session;
        let (y, routers) = collect_router_logits(|| s.output(&s.tree, b.x.clone(), &side));
        let y = y?;
        self.kto_reference_point(&y, &mut b)?;
        let loss = self.session.task.train_loss(&y, &b)?;
        let aux = load_balancing_loss(&routers, b.real.as_ref())?;
        let loss = match (&aux, routers.first()) {
            (Some(a), Some(r)) => {
                let coef = self
                    .spec()
                    .train
                    .router_aux_loss_coef
                    .unwrap_or(r.aux_loss_coef);
                loss.f_add(&a.f_mul_scalar(coef).ctx("aux loss")?)
                    .ctx("aux loss")?
            }
            _ => loss,
        };
        let loss = self.exec.weigh_loss(loss, &b)?;
        let scaled = loss.f_div_scalar(grad_accum as f64).ctx("loss")?;
        self.exec.before_backward(micro + 1 == grad_accum);
        scaled.f_backward().ctx("backward")?;
        let l = loss.detach().f_to_kind(tch::Kind::Double).ctx("loss")?;
        self.window.0 += match (&b.pref, &b.real) {
            // Preference sequences vary in length: their real tokens, on every rank.
            (Some(_), Some(real)) => {
                let n = real
                    .tensor()
                    .f_sum(tch::Kind::Double)
                    .and_then(|s| s.f_double_value(&[]))
                    .ctx("tokens")?;
                n as usize * self.exec.size()
            }
            _ => self.session.task.tokens_per_batch(global),
        };
        let aux = aux
            .map(|a| a.detach().f_to_kind(tch::Kind::Double))
            .transpose()
            .ctx("aux loss")?;
        Ok((l, aux))
    }

    /// KTO under data parallelism: the reference point is the mean of every rank's (one
    /// process computes its own in the loss).
    fn kto_reference_point(
        &self,
        y: &super::head::Output,
        b: &mut super::task::Batch,
    ) -> Result<()> {
        let Some(pt) = self.session.task.preference() else {
            return Ok(());
        };
        let kto = pt.objective.kind == crate::spec::ObjectiveKind::Kto;
        let (Some(p), true) = (b.pref.as_ref(), kto && self.exec.size() > 1) else {
            return Ok(());
        };
        let Some(reference) = p.reference.as_ref() else {
            return Ok(());
        };
        let (logps, _) = pt.logps(y, b)?;
        let n = p.pairs as i64;
        let kl = logps
            .f_narrow(0, n, n)
            .and_then(|k| k.f_sub(&reference.f_narrow(0, n, n)?))
            .and_then(|d| d.f_mean(tch::Kind::Double))
            .and_then(|m| m.f_double_value(&[]))
            .ctx("kto: reference point")?;
        let all = self.exec.sum_values(&[kl])?;
        if let Some(p) = b.pref.as_mut() {
            p.reference_point = Some((all[0] / self.exec.size() as f64).max(0.0));
        }
        Ok(())
    }

    /// The error that stops a run whose loss or gradient is not finite.
    fn watchdog(&mut self, loss: f64, grad_norm: f64) -> Result<Error> {
        let what = if !loss.is_finite() {
            format!("the loss is {loss}")
        } else {
            match self.opt.first_bad_grad()? {
                Some(l) => format!("the gradient of `{l}` is not finite"),
                None => format!("the gradient norm is {grad_norm}"),
            }
        };
        self.observers.abort();
        self.ckpt.record_divergence(self.step + 1, &what);
        let keep = self.ckpt.last_good();
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
    /// Every rank of a data-parallel run calls it (their generator states go in); rank 0
    /// writes, and the others get `None`.
    pub fn checkpoint(&self) -> Result<Option<PathBuf>> {
        let spec = self.spec();
        let rng = checkpoint::cpu_rng_hex()?;
        let rng_ranks = self.exec.other_rng_states(&rng)?;
        if !self.ckpt.writes() {
            return Ok(None);
        }
        let state = TrainState {
            step: self.step,
            cursor: self.cursor.position,
            optimizer_step: self.opt.steps(),
            next_lr: self.optim.lr_at(self.step, spec.train.steps),
            rng_cpu: rng,
            metrics: self.last_eval.clone(),
            best: self.ckpt.best(),
            seed: spec.run.seed,
            base: self.ckpt.base().cloned(),
            world_size: self.exec.size() as u64,
            rng_ranks,
        };
        let dir = self.ckpt.save(&state, &self.params, self.opt.state())?;
        Ok(Some(dir))
    }

    /// Trains until `[train] steps` or until `stop` is set, logging, evaluating and
    /// checkpointing as the spec says.
    pub fn run(mut self, stop: &StopSignal) -> Result<Summary> {
        let steps = self.spec().train.steps;
        self.observers.start(self.step, self.resumed_from)?;
        let (mut last_ckpt, mut final_loss, mut interrupted) = (None, None, false);
        self.window = (0, Instant::now());
        while self.step < steps {
            self.observers.before_step(self.step)?;
            self.profiling.before_step()?;
            let o = self.step()?;
            self.profiling.after_step(self.step)?;
            final_loss = Some(o.loss);
            let new_best = self.record_step(&o)?;
            let stopping = stop.load(Ordering::SeqCst);
            let (stopping, new_best) = self.exec.agree_on_flags(stopping, new_best)?;
            if self.ckpt.due(self.step, steps, stopping, new_best) {
                last_ckpt = self.checkpoint()?;
            }
            if stopping {
                interrupted = true;
                break;
            }
        }
        let profile = self.profiling.finish(self.step)?;
        // No rank leaves before rank 0 has written the last checkpoint (a launcher that sees
        // one rank exit may stop the others).
        self.exec.barrier()?;
        self.observers.end();
        if last_ckpt.is_none() {
            last_ckpt = self.ckpt.newest();
        }
        Ok(Summary {
            name: self.spec().run.name.clone(),
            out_dir: self.spec().run.out_dir.clone(),
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
            rank: self.exec.rank(),
            world_size: self.exec.size(),
        })
    }

    /// Tells the observers about the step just taken, logging it and evaluating when
    /// `[train] log_every` and `eval_every` say so (rank 0 alone); returns whether the
    /// evaluation is a new best.
    fn record_step(&mut self, o: &StepOutcome) -> Result<bool> {
        if !self.exec.is_main() {
            return Ok(false);
        }
        let t = &self.spec().train;
        let (step, steps) = (self.step, t.steps);
        let logged = step.is_multiple_of(t.log_every) || step == steps;
        let evaluated = (t.eval_every > 0 && step.is_multiple_of(t.eval_every)) || step == steps;
        let tokens_per_s = logged.then(|| self.take_window());
        self.observers.step(step, o, tokens_per_s)?;
        let mut new_best = false;
        if evaluated {
            self.last_eval = self.evaluate()?;
            // No eval split (eval_fraction = 0): nothing to tell.
            if !self.last_eval.is_empty() {
                self.observers.eval(step, &self.last_eval)?;
                new_best = self.ckpt.note_best(&self.last_eval, step);
            }
        }
        self.observers.step_end(step)?;
        Ok(new_best)
    }

    /// Tokens (or examples) per second since the last logged step; starts the next window.
    fn take_window(&mut self) -> f64 {
        let secs = self.window.1.elapsed().as_secs_f64().max(1e-9);
        let tps = self.window.0 as f64 / secs;
        self.window = (0, Instant::now());
        tps
    }
}
