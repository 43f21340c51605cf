//! Expectations on metrics for CI gates (`pzt eval --expect 'eval.exact_match>=0.9'`): a metric
//! name, a comparison and a bound, checked against a metrics map. A metric that is NaN fails
//! every expectation; a metric the run did not produce is bad input, not a failed gate.

use crate::base::{Error, Result};
use serde_json::{json, Map, Value};

/// A comparison of an expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

impl Cmp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Ge => ">=",
            Cmp::Gt => ">",
            Cmp::Le => "<=",
            Cmp::Lt => "<",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }

    fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Cmp::Ge => value >= bound,
            Cmp::Gt => value > bound,
            Cmp::Le => value <= bound,
            Cmp::Lt => value < bound,
            Cmp::Eq => value == bound,
            Cmp::Ne => !value.is_nan() && value != bound,
        }
    }
}

/// `METRIC OP BOUND`, e.g. `eval.loss<0.1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub metric: String,
    pub cmp: Cmp,
    pub bound: f64,
}

/// The outcome of one expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub expectation: Expectation,
    pub value: f64,
    pub pass: bool,
}

impl Expectation {
    /// Parses `METRIC OP BOUND` (spaces allowed around the operator); OP is one of `>=`, `>`,
    /// `<=`, `<`, `==`, `!=`, BOUND a finite number.
    pub fn parse(s: &str) -> Result<Expectation> {
        let bad = |why: &str| {
            Error::Config(format!(
                "--expect `{}`: {why}; write METRIC OP NUMBER, e.g. 'eval.exact_match>=0.9' (OP: >= > <= < == !=)",
                crate::base::text::clip(s, 200)
            ))
        };
        let at = s
            .find(['>', '<', '=', '!'])
            .ok_or_else(|| bad("no comparison"))?;
        let rest = &s[at..];
        let (cmp, len) = [
            (">=", Cmp::Ge),
            ("<=", Cmp::Le),
            ("==", Cmp::Eq),
            ("!=", Cmp::Ne),
            (">", Cmp::Gt),
            ("<", Cmp::Lt),
        ]
        .iter()
        .find(|(sym, _)| rest.starts_with(sym))
        .map(|(sym, c)| (*c, sym.len()))
        .ok_or_else(|| bad("unknown comparison (use >=, >, <=, <, == or !=)"))?;
        let metric = s[..at].trim();
        if metric.is_empty() {
            return Err(bad("no metric name before the comparison"));
        }
        if metric.contains(char::is_whitespace) {
            return Err(bad("the metric name has a space in it"));
        }
        let num = rest[len..].trim();
        let bound: f64 = num
            .parse()
            .map_err(|_| bad(&format!("`{num}` is not a number")))?;
        if !bound.is_finite() {
            return Err(bad("the bound must be a finite number"));
        }
        Ok(Expectation {
            metric: metric.to_string(),
            cmp,
            bound,
        })
    }

    /// Checks the expectation against `metrics`; a metric that is missing or not a number is
    /// an error naming the metrics there are.
    pub fn check(&self, metrics: &Map<String, Value>) -> Result<Verdict> {
        let value = match metrics.get(&self.metric) {
            // JSON has no NaN: a NaN metric is written as null.
            Some(Value::Null) => f64::NAN,
            Some(v) => v.as_f64().ok_or_else(|| {
                Error::Config(format!(
                    "--expect: metric `{}` is not a number ({v})",
                    self.metric
                ))
            })?,
            None => {
                let known: Vec<&str> = metrics.keys().map(String::as_str).collect();
                return Err(Error::Config(format!(
                    "--expect: this run has no metric `{}` (it has: {})",
                    self.metric,
                    known.join(", ")
                )));
            }
        };
        Ok(Verdict {
            expectation: self.clone(),
            value,
            pass: self.cmp.holds(value, self.bound),
        })
    }
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.metric, self.cmp.symbol(), self.bound)
    }
}

impl Verdict {
    /// `PASS eval.loss < 0.1 (0.0523)` / `FAIL ...`.
    pub fn line(&self) -> String {
        format!(
            "{} {} (value {})",
            if self.pass { "PASS" } else { "FAIL" },
            self.expectation,
            self.value
        )
    }

    /// The verdict as JSON (`pzt eval --json`).
    pub fn to_json(&self) -> Value {
        json!({
            "expect": self.expectation.to_string(),
            "metric": self.expectation.metric,
            "op": self.expectation.cmp.symbol(),
            "bound": self.expectation.bound,
            "value": if self.value.is_finite() { json!(self.value) } else { json!(self.value.to_string()) },
            "pass": self.pass,
        })
    }
}

/// Checks every expectation; the first missing metric is an error.
pub fn check_all(exps: &[Expectation], metrics: &Map<String, Value>) -> Result<Vec<Verdict>> {
    exps.iter().map(|e| e.check(metrics)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("eval.loss".into(), json!(0.05));
        m.insert("eval.exact_match".into(), json!(0.9));
        m.insert("eval.nan".into(), Value::Null);
        m
    }

    #[test]
    fn parses_and_checks() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let m = metrics();
        let e = Expectation::parse("eval.exact_match>=0.9")?;
        assert_eq!(e.cmp, Cmp::Ge);
        assert!(e.check(&m)?.pass);
        let v = Expectation::parse(" eval.loss < 0.01 ")?.check(&m)?;
        assert!(!v.pass);
        assert_eq!(v.line(), "FAIL eval.loss < 0.01 (value 0.05)");
        assert!(!Expectation::parse("eval.loss!=0.05")?.check(&m)?.pass);
        for op in [">=", ">", "<=", "<", "==", "!="] {
            let v = Expectation::parse(&format!("eval.nan{op}0"))?.check(&m)?;
            assert!(!v.pass, "NaN passed {op}");
        }
        Ok(())
    }

    #[test]
    fn refuses_bad_input() -> std::result::Result<(), Box<dyn std::error::Error>> {
        for s in [
            "",
            "eval.loss",
            ">=0.9",
            "eval.loss=>1",
            "eval.loss>=x",
            "eval.loss>=nan",
            "eval.loss>=inf",
            "eval loss>=1",
        ] {
            assert!(Expectation::parse(s).is_err(), "accepted {s:?}");
        }
        let e = Expectation::parse("eval.accuracy>=0.9")?;
        let msg = e.check(&metrics()).err().map(|e| e.to_string());
        assert!(
            msg.as_deref()
                .is_some_and(|m| m.contains("eval.exact_match")),
            "{msg:?}"
        );
        Ok(())
    }
}
