//! What a run prints while it trains: plain `step` lines, or a progress bar on a terminal, or
//! nothing (`--json`).

use super::TrainOptions;
use serde_json::{Map, Value};

/// Prints a run's progress.
pub struct Reporter {
    quiet: bool,
    want_bar: bool,
    bar: Option<indicatif::ProgressBar>,
    total: u64,
}

/// `eval.loss 0.1234  eval.accuracy 0.9000`.
pub fn fmt_metrics(m: &Map<String, Value>) -> String {
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

impl Reporter {
    /// A reporter for `total` steps.
    pub fn new(opts: &TrainOptions, total: u64) -> Self {
        Reporter {
            quiet: opts.quiet,
            want_bar: opts.progress && !opts.quiet,
            bar: None,
            total,
        }
    }

    /// Shows the progress bar (when asked for) at `step`; lines printed before stay above it.
    pub fn start_bar(&mut self, step: u64) {
        if self.want_bar {
            let pb = indicatif::ProgressBar::new(self.total);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.set_position(step);
            self.bar = Some(pb);
        }
    }

    /// A line (the start and resume lines).
    pub fn say(&self, s: String) {
        if !self.quiet {
            crate::base::text::out(&s);
        }
    }

    /// The bar's position.
    pub fn position(&self, step: u64) {
        if let Some(pb) = &self.bar {
            pb.set_position(step);
        }
    }

    /// The training metrics of a logged step.
    pub fn step(&self, step: u64, msg: String) {
        match &self.bar {
            Some(pb) => pb.set_message(msg),
            None => self.say(format!("step {step:>6}/{}  {msg}", self.total)),
        }
    }

    /// The eval metrics of a step.
    pub fn eval(&self, step: u64, m: &Map<String, Value>) {
        match &self.bar {
            Some(pb) => pb.println(format!("step {step}: {}", fmt_metrics(m))),
            None => self.say(format!("step {step:>6}/{}  {}", self.total, fmt_metrics(m))),
        }
    }

    /// The run stopped with an error: leave the bar where it is.
    pub fn abandon(&self) {
        if let Some(pb) = &self.bar {
            pb.abandon();
        }
    }

    /// The run ended.
    pub fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}
