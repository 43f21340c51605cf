//! What watches a run: the `metrics.jsonl` writer, the TensorBoard event writer and the
//! progress printout, each an [`Observer`] the step loop calls at the same points. Rank 0 alone
//! has them (the other ranks of a data-parallel run print and write nothing).

use super::report::Reporter;
use super::trainer::StepOutcome;
use super::TrainOptions;
use crate::base::Result;
use crate::run::metrics::MetricsWriter;
use crate::run::tensorboard::EventWriter;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Something the step loop tells what the run does.
pub trait Observer {
    /// A line to show (the start, resume and warning lines).
    fn on_note(&mut self, _line: &str) {}

    /// The loop starts at `step`; `resumed_from` is the checkpoint's step of a resumed run.
    fn on_start(&mut self, _step: u64, _resumed_from: Option<u64>) -> Result<()> {
        Ok(())
    }

    /// A step is about to be taken after `step`.
    fn before_step(&mut self, _step: u64) -> Result<()> {
        Ok(())
    }

    /// Step `step` was taken; `tokens_per_s` (since the last logged step) is there when it is
    /// a logged step (`[train] log_every`, or the last).
    fn on_step(&mut self, step: u64, o: &StepOutcome, tokens_per_s: Option<f64>) -> Result<()>;

    /// The eval metrics of step `step` (never empty).
    fn on_eval(&mut self, step: u64, metrics: &Map<String, Value>) -> Result<()>;

    /// Everything about step `step` has been said.
    fn on_step_end(&mut self, _step: u64) -> Result<()> {
        Ok(())
    }

    /// The run stops with an error.
    fn on_abort(&mut self) {}

    /// The loop ended.
    fn on_end(&mut self) {}
}

/// `metrics.jsonl`: one line per logged or evaluated step, the train fields then the eval ones.
struct Metrics {
    path: PathBuf,
    /// Opened when the loop starts.
    writer: Option<MetricsWriter>,
    /// The line of the step being said.
    line: Map<String, Value>,
}

impl Observer for Metrics {
    fn on_start(&mut self, _step: u64, resumed_from: Option<u64>) -> Result<()> {
        self.writer = Some(MetricsWriter::open(&self.path, resumed_from)?);
        Ok(())
    }

    fn on_step(&mut self, step: u64, o: &StepOutcome, tokens_per_s: Option<f64>) -> Result<()> {
        if let Some(tps) = tokens_per_s {
            self.line.insert("step".into(), json!(step));
            self.line.insert("loss".into(), json!(o.loss));
            self.line.insert("lr".into(), json!(o.lr));
            self.line.insert("grad_norm".into(), json!(o.grad_norm));
            if let Some(a) = o.aux_loss {
                self.line.insert("aux_loss".into(), json!(a));
            }
            for (k, v) in o.preference_metrics() {
                self.line.insert(k, json!(v));
            }
            self.line.insert("tokens_per_s".into(), json!(tps));
        }
        Ok(())
    }

    fn on_eval(&mut self, step: u64, metrics: &Map<String, Value>) -> Result<()> {
        if !self.line.contains_key("step") {
            self.line.insert("step".into(), json!(step));
        }
        for (k, v) in metrics {
            self.line.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    fn on_step_end(&mut self, _step: u64) -> Result<()> {
        let line = std::mem::take(&mut self.line);
        match &mut self.writer {
            Some(w) if !line.is_empty() => w.write(&line),
            _ => Ok(()),
        }
    }
}

/// TensorBoard events: `train/...` scalars of logged steps, `eval/...` of evaluated ones.
struct Events {
    dir: PathBuf,
    /// Created before the first step: a finished run asked to train again writes no event
    /// file.
    writer: Option<EventWriter>,
}

impl Observer for Events {
    fn before_step(&mut self, _step: u64) -> Result<()> {
        if self.writer.is_none() {
            self.writer = Some(EventWriter::create(&self.dir)?);
        }
        Ok(())
    }

    fn on_step(&mut self, step: u64, o: &StepOutcome, tokens_per_s: Option<f64>) -> Result<()> {
        let (Some(tps), Some(tb)) = (tokens_per_s, &mut self.writer) else {
            return Ok(());
        };
        let mut scalars = vec![
            ("train/loss".into(), o.loss),
            ("train/lr".into(), o.lr),
            ("train/grad_norm".into(), o.grad_norm),
            ("train/tokens_per_s".into(), tps),
        ];
        if let Some(a) = o.aux_loss {
            scalars.push(("train/aux_loss".into(), a));
        }
        for (k, v) in o.preference_metrics() {
            scalars.push((format!("train/{k}"), v));
        }
        tb.scalars(step as i64, &scalars)
    }

    fn on_eval(&mut self, step: u64, metrics: &Map<String, Value>) -> Result<()> {
        let Some(tb) = &mut self.writer else {
            return Ok(());
        };
        let scalars: Vec<(String, f64)> = metrics
            .iter()
            .filter_map(|(k, v)| Some((k.replace("eval.", "eval/"), v.as_f64()?)))
            .collect();
        tb.scalars(step as i64, &scalars)
    }
}

/// The printout: plain lines, a progress bar, or nothing (`report.rs`).
impl Observer for Reporter {
    fn on_note(&mut self, line: &str) {
        self.say(line.to_string());
    }

    fn on_start(&mut self, step: u64, _resumed_from: Option<u64>) -> Result<()> {
        self.start_bar(step);
        Ok(())
    }

    fn on_step(&mut self, step: u64, o: &StepOutcome, tokens_per_s: Option<f64>) -> Result<()> {
        if let Some(tps) = tokens_per_s {
            let mut aux = o
                .aux_loss
                .map_or(String::new(), |a| format!("  aux_loss {a:.4}"));
            for (k, v) in o.preference_metrics() {
                if k == "rewards.accuracies" || k == "rewards.margins" || k == "kl" {
                    aux.push_str(&format!("  {k} {v:.4}"));
                }
            }
            self.step(
                step,
                format!(
                    "loss {:.4}{aux}  lr {:.2e}  grad_norm {:.3}  tok/s {tps:.0}",
                    o.loss, o.lr, o.grad_norm
                ),
            );
        }
        self.position(step);
        Ok(())
    }

    fn on_eval(&mut self, step: u64, metrics: &Map<String, Value>) -> Result<()> {
        self.eval(step, metrics);
        Ok(())
    }

    fn on_abort(&mut self) {
        self.abandon();
    }

    fn on_end(&mut self) {
        self.finish();
    }
}

/// A run's observers, called in order: the metrics file, the events, the printout.
pub struct Observers(Vec<Box<dyn Observer>>);

impl Observers {
    /// The observers of a run into `out_dir` of `steps` steps: rank 0's (`main`), or none.
    pub fn new(main: bool, opts: &TrainOptions, out_dir: &Path, steps: u64) -> Observers {
        if !main {
            return Observers(vec![]);
        }
        Observers(vec![
            Box::new(Metrics {
                path: out_dir.join("metrics.jsonl"),
                writer: None,
                line: Map::new(),
            }),
            Box::new(Events {
                dir: out_dir.join("tensorboard"),
                writer: None,
            }),
            Box::new(Reporter::new(opts, steps)),
        ])
    }

    /// See [`Observer::on_note`].
    pub fn note(&mut self, line: String) {
        self.0.iter_mut().for_each(|o| o.on_note(&line));
    }

    /// See [`Observer::on_start`].
    pub fn start(&mut self, step: u64, resumed_from: Option<u64>) -> Result<()> {
        self.0
            .iter_mut()
            .try_for_each(|o| o.on_start(step, resumed_from))
    }

    /// See [`Observer::before_step`].
    pub fn before_step(&mut self, step: u64) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.before_step(step))
    }

    /// See [`Observer::on_step`].
    pub fn step(&mut self, step: u64, o: &StepOutcome, tokens_per_s: Option<f64>) -> Result<()> {
        self.0
            .iter_mut()
            .try_for_each(|x| x.on_step(step, o, tokens_per_s))
    }

    /// See [`Observer::on_eval`].
    pub fn eval(&mut self, step: u64, metrics: &Map<String, Value>) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.on_eval(step, metrics))
    }

    /// See [`Observer::on_step_end`].
    pub fn step_end(&mut self, step: u64) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.on_step_end(step))
    }

    /// See [`Observer::on_abort`].
    pub fn abort(&mut self) {
        self.0.iter_mut().for_each(|o| o.on_abort());
    }

    /// See [`Observer::on_end`].
    pub fn end(&mut self) {
        self.0.iter_mut().for_each(|o| o.on_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_and_evaluated_step_is_one_metrics_line() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("pzt-observers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| crate::base::Error::Config(e.to_string()))?;
        let mut m = Metrics {
            path: dir.join("metrics.jsonl"),
            writer: None,
            line: Map::new(),
        };
        let o = StepOutcome {
            loss: 1.5,
            lr: 0.1,
            grad_norm: 2.0,
            aux_loss: None,
            pref: None,
        };
        m.on_start(0, None)?;
        m.on_step(1, &o, None)?;
        m.on_step_end(1)?; // neither logged nor evaluated: no line
        m.on_step(2, &o, Some(100.0))?;
        let mut eval = Map::new();
        eval.insert("eval.loss".into(), json!(1.25));
        m.on_eval(2, &eval)?;
        m.on_step_end(2)?;
        m.on_step(3, &o, None)?;
        m.on_eval(3, &eval)?;
        m.on_step_end(3)?;
        let lines = crate::run::metrics::read_metrics(&m.path)?;
        let keys: Vec<Vec<&str>> = lines
            .iter()
            .map(|l| l.keys().map(|k| k.as_str()).collect())
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            keys,
            [
                vec![
                    "step",
                    "loss",
                    "lr",
                    "grad_norm",
                    "tokens_per_s",
                    "eval.loss"
                ],
                vec!["step", "eval.loss"],
            ]
        );
        assert_eq!(
            (lines[0]["step"].as_u64(), lines[1]["step"].as_u64()),
            (Some(2), Some(3))
        );
        Ok(())
    }
}
