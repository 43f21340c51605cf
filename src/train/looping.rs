//! The training loop: steps until `[train] steps` or a stop request, logging metrics and
//! TensorBoard events, evaluating, and checkpointing as the spec says. In a data-parallel run
//! rank 0 alone logs, evaluates and writes; the ranks agree each step on stopping and on
//! checkpointing.

use super::trainer::{StepOutcome, Trainer};
use super::{StopSignal, Summary};
use crate::backend::device_name;
use crate::backend::dist::ReduceOp;
use crate::base::Result;
use crate::run::checkpoint;
use crate::run::metrics::MetricsWriter;
use crate::run::tensorboard::EventWriter;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Trainer {
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
        // Rank 0 alone writes metrics, events and checkpoints.
        let main = self.world.is_main();
        let mut metrics = match main {
            true => Some(MetricsWriter::open(
                &out_dir.join("metrics.jsonl"),
                self.resumed_from,
            )?),
            false => None,
        };
        // Opened at the first step: a finished run asked to train again writes no event file.
        let mut tb: Option<EventWriter> = None;
        self.report.start_bar(self.step);
        let mut last_ckpt = None;
        let mut final_loss = None;
        let mut interrupted = false;
        self.window = (0, Instant::now());
        let (mut ran, mut profiler, mut profile) = (0u64, None, None);
        while self.step < steps {
            if tb.is_none() && main {
                tb = Some(EventWriter::create(&out_dir.join("tensorboard"))?);
            }
            if ran == 1 && self.profile.is_some() {
                profiler = Some(crate::backend::Profiler::start(true)?);
            }
            let o = self.step()?;
            ran += 1;
            if self.profile.as_ref().is_some_and(|p| ran == 1 + p.steps) {
                profile = self.finish_profile(profiler.take())?;
            }
            final_loss = Some(o.loss);
            let counts = (steps, log_every, eval_every);
            let new_best = self.record_step(&o, tb.as_mut(), metrics.as_mut(), counts)?;
            let stopping = stop.load(Ordering::SeqCst);
            let stopping = self.agree_and_checkpoint(steps, stopping, new_best, &mut last_ckpt)?;
            if stopping {
                interrupted = true;
                break;
            }
        }
        let profile = self.wind_down(profiler, profile)?;
        if last_ckpt.is_none() && main {
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
            rank: self.world.rank,
            world_size: self.world.size,
        })
    }

    /// Logs and evaluates the step just taken when `counts` (steps, log_every, eval_every) say
    /// so, on rank 0 alone (which holds the writers), and writes its metrics line; returns
    /// whether the evaluation is a new best.
    fn record_step(
        &mut self,
        o: &StepOutcome,
        tb: Option<&mut EventWriter>,
        metrics: Option<&mut MetricsWriter>,
        (steps, log_every, eval_every): (u64, u64, u64),
    ) -> Result<bool> {
        let step = self.step;
        let mut line = Map::new();
        let mut new_best = false;
        if let (Some(tb), Some(metrics)) = (tb, metrics) {
            if step.is_multiple_of(log_every) || step == steps {
                self.log_step(o, &mut line, tb)?;
            }
            self.report.position(step);
            if (eval_every > 0 && step.is_multiple_of(eval_every)) || step == steps {
                new_best = self.eval_step(&mut line, tb)?;
            }
            if !line.is_empty() {
                metrics.write(&line)?;
            }
        }
        Ok(new_best)
    }

    /// Agrees with the other ranks on stopping and on a new best, then writes a checkpoint
    /// when one is due (a new best, the last step, a stop, or `[checkpoint] every_steps`) and
    /// notes it in `last_ckpt`; returns whether to stop.
    fn agree_and_checkpoint(
        &mut self,
        steps: u64,
        stopping: bool,
        new_best: bool,
        last_ckpt: &mut Option<PathBuf>,
    ) -> Result<bool> {
        let step = self.step;
        let (mut stopping, mut new_best) = (stopping, new_best);
        if self.world.distributed() {
            // The ranks stop and checkpoint together: any rank's stop, rank 0's new best.
            let flags = [f64::from(u8::from(stopping)), f64::from(u8::from(new_best))];
            let agreed = self.world.reduce_values(&flags, ReduceOp::Max)?;
            (stopping, new_best) = (agreed[0] > 0.5, agreed[1] > 0.5);
        }
        let every = self.spec().checkpoint.every_steps;
        if new_best || step == steps || stopping || every.is_some_and(|e| step.is_multiple_of(e)) {
            *last_ckpt = self.checkpoint()?;
        }
        Ok(stopping)
    }

    /// Ends the loop: stops a profiler still running (its tables replace `profile`), waits for
    /// every rank, and clears the progress bar; returns the profile tables.
    fn wind_down(
        &mut self,
        profiler: Option<crate::backend::Profiler>,
        profile: Option<String>,
    ) -> Result<Option<String>> {
        let mut profile = profile;
        if profiler.is_some() {
            profile = self.finish_profile(profiler)?;
        }
        if self.world.distributed() {
            // No rank leaves before rank 0 has written the last checkpoint (a launcher that
            // sees one rank exit may stop the others).
            self.world.barrier()?;
        }
        self.report.finish();
        Ok(profile)
    }

    /// Stops the profiler of `--profile` (if it ran), writes its trace and returns its tables.
    fn finish_profile(&self, p: Option<crate::backend::Profiler>) -> Result<Option<String>> {
        let (Some(p), Some(o)) = (p, &self.profile) else {
            return Ok(None);
        };
        let mut tables = String::new();
        crate::base::outputs::write_with(&o.trace, |tmp| {
            tables = p.stop(Some(tmp), 30)?;
            Ok(())
        })?;
        Ok(Some(format!(
            "profile of {} step(s), trace in {}:\n\n{tables}",
            o.steps.min(self.step),
            o.trace.display()
        )))
    }
}
