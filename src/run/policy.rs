//! `[checkpoint]`: when checkpoints are written and which are kept.

use crate::base::Result;
use serde::{Deserialize, Serialize};

/// `[checkpoint]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many steps (always at the end).
    pub every_steps: Option<u64>,
    /// Keep the newest this many checkpoints.
    pub keep_last: usize,
    /// Also keep the best checkpoint by this eval metric (`eval.loss`, `eval.accuracy`, ...).
    pub keep_best: Option<String>,
    /// `min` or `max` (default: `max` for accuracies, `min` otherwise).
    pub best_mode: Option<String>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_steps: None,
            keep_last: 3,
            keep_best: None,
            best_mode: None,
        }
    }
}

/// The eval metrics a run can produce (for `keep_best`).
pub const EVAL_METRICS: [&str; 5] = [
    "eval.loss",
    "eval.perplexity",
    "eval.accuracy",
    "eval.token_accuracy",
    "eval.exact_match",
];

impl CheckpointConfig {
    /// Checks values.
    pub fn validate(&self) -> Result<()> {
        if self.every_steps == Some(0) {
            return bad(
                "every_steps",
                "[checkpoint]: every_steps must be at least 1".into(),
            );
        }
        if self.keep_last == 0 {
            return bad(
                "keep_last",
                "[checkpoint]: keep_last must be at least 1".into(),
            );
        }
        if let Some(m) = &self.keep_best {
            if !EVAL_METRICS.contains(&m.as_str()) {
                return bad(
                    "keep_best",
                    format!(
                        "[checkpoint]: keep_best must be one of {}, got `{m}`",
                        EVAL_METRICS.join(", ")
                    ),
                );
            }
        }
        if let Some(m) = &self.best_mode {
            if m != "min" && m != "max" {
                return bad(
                    "best_mode",
                    format!("[checkpoint]: best_mode must be min or max, got `{m}`"),
                );
            }
        }
        Ok(())
    }

    /// Whether larger values of the best metric are better.
    pub fn maximize(&self) -> bool {
        match self.best_mode.as_deref() {
            Some("max") => true,
            Some(_) => false,
            None => self
                .keep_best
                .as_deref()
                .map(|m| m.contains("accuracy") || m.contains("exact"))
                .unwrap_or(false),
        }
    }
}

fn bad<T>(field: &str, message: String) -> Result<T> {
    Err(crate::base::Error::InSection {
        section: "checkpoint".into(),
        field: field.into(),
        message,
    })
}
