//! `[objective]`: what a run's loss is. `lm` (the default) is the next-token loss; `dpo`,
//! `ipo`, `orpo`, `simpo` and `kto` are the preference objectives, over preference rows
//! (`[data] source = "preference"`), as TRL defines them.
//!
//! ```toml
//! [objective]
//! kind = "dpo"
//! beta = 0.1
//! reference = "initial"
//! ```
//!
//! Each kind takes only its own keys: a key of another kind is an error naming it.

use crate::base::{Error, Result};
use serde::{Deserialize, Serialize};

/// The objectives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveKind {
    /// Next-token cross-entropy under the loss mask.
    #[default]
    Lm,
    /// Direct preference optimization (with label smoothing: conservative DPO).
    Dpo,
    /// Identity preference optimization.
    Ipo,
    /// Odds-ratio preference optimization (no reference).
    Orpo,
    /// Simple preference optimization (no reference).
    Simpo,
    /// Kahneman-Tversky optimization, on unpaired rows.
    Kto,
}

/// Where a preference objective's reference log-probabilities come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Reference {
    /// The model as the run starts (for adapters that start at zero, the model with its
    /// adapters off).
    Initial,
    /// The model with its adapters off.
    Base,
    /// Another model: a Hugging Face directory or a pzt checkpoint (relative to the recipe).
    Path(String),
}

/// `[objective]`, typed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Objective {
    pub kind: ObjectiveKind,
    /// DPO's and KTO's beta, IPO's tau, ORPO's lambda, SimPO's beta.
    pub beta: f64,
    /// DPO: the share of pairs assumed flipped (conservative DPO).
    pub label_smoothing: f64,
    /// SimPO: the target margin.
    pub gamma: f64,
    /// SimPO: the weight of the chosen completions' mean negative log-likelihood.
    pub nll_weight: f64,
    /// KTO: the weights of desirable and undesirable rows.
    pub desirable_weight: f64,
    pub undesirable_weight: f64,
    /// DPO, IPO, KTO: the reference model.
    pub reference: Reference,
    /// Compute the reference log-probabilities once over the data and keep them.
    pub precompute_reference: bool,
}

impl Default for Objective {
    fn default() -> Self {
        Objective {
            kind: ObjectiveKind::Lm,
            beta: 0.1,
            label_smoothing: 0.0,
            gamma: 0.5,
            nll_weight: 0.0,
            desirable_weight: 1.0,
            undesirable_weight: 1.0,
            reference: Reference::Initial,
            precompute_reference: false,
        }
    }
}

fn bad<T>(field: &str, message: String) -> Result<T> {
    Err(Error::ConfigField {
        field: field.into(),
        message,
    })
}

/// The keys each kind takes besides `kind`.
fn keys_of(kind: ObjectiveKind) -> &'static [&'static str] {
    match kind {
        ObjectiveKind::Lm => &[],
        ObjectiveKind::Dpo => &[
            "beta",
            "label_smoothing",
            "reference",
            "precompute_reference",
        ],
        ObjectiveKind::Ipo => &["beta", "reference", "precompute_reference"],
        ObjectiveKind::Orpo => &["beta"],
        ObjectiveKind::Simpo => &["beta", "gamma", "nll_weight"],
        ObjectiveKind::Kto => &[
            "beta",
            "desirable_weight",
            "undesirable_weight",
            "reference",
            "precompute_reference",
        ],
    }
}

/// A number at `key` (an integer or a float), finite.
fn number(t: &toml::Table, key: &str) -> Result<Option<f64>> {
    match t.get(key) {
        None => Ok(None),
        Some(v) => match v.as_float().or(v.as_integer().map(|i| i as f64)) {
            Some(f) if f.is_finite() => Ok(Some(f)),
            _ => bad(
                key,
                format!("[objective]: `{key}` must be a finite number, got {v}"),
            ),
        },
    }
}

impl Objective {
    /// Decodes `[objective]`: `kind` picks the objective, which takes only its own keys.
    pub fn decode(t: &toml::Table) -> Result<Objective> {
        let kind: ObjectiveKind = match t.get("kind") {
            None => ObjectiveKind::Lm,
            Some(v) => crate::tree::registry::decode_config(
                "[objective]",
                &toml::Table::from_iter([("kind".to_string(), v.clone())]),
            )
            .map(|k: KindOnly| k.kind)?,
        };
        let allowed = keys_of(kind);
        if let Some(k) = t
            .keys()
            .find(|k| *k != "kind" && !allowed.contains(&k.as_str()))
        {
            let mut all = vec!["`kind`".to_string()];
            all.extend(allowed.iter().map(|k| format!("`{k}`")));
            return bad(
                k,
                format!(
                    "[objective] (kind `{}`): unknown field `{k}`, expected one of {}",
                    kind.name(),
                    all.join(", ")
                ),
            );
        }
        let mut o = Objective {
            kind,
            ..Objective::default()
        };
        if let Some(b) = number(t, "beta")? {
            o.beta = b;
        }
        o.label_smoothing = number(t, "label_smoothing")?.unwrap_or(o.label_smoothing);
        o.gamma = number(t, "gamma")?.unwrap_or(o.gamma);
        o.nll_weight = number(t, "nll_weight")?.unwrap_or(o.nll_weight);
        o.desirable_weight = number(t, "desirable_weight")?.unwrap_or(o.desirable_weight);
        o.undesirable_weight = number(t, "undesirable_weight")?.unwrap_or(o.undesirable_weight);
        o.reference = match t.get("reference") {
            None => Reference::Initial,
            Some(toml::Value::String(s)) => match s.as_str() {
                "initial" => Reference::Initial,
                "base" => Reference::Base,
                "" => return bad("reference", "[objective]: `reference` is empty; give \"initial\", \"base\" or a model's path".into()),
                p => Reference::Path(p.to_string()),
            },
            Some(v) => return bad("reference", format!("[objective]: `reference` must be \"initial\", \"base\" or a path, got {v}")),
        };
        o.precompute_reference = match t.get("precompute_reference") {
            None => false,
            Some(toml::Value::Boolean(b)) => *b,
            Some(v) => {
                return bad(
                    "precompute_reference",
                    format!("[objective]: `precompute_reference` must be true or false, got {v}"),
                )
            }
        };
        o.validate()?;
        Ok(o)
    }

    /// Checks the values' ranges.
    fn validate(&self) -> Result<()> {
        if self.beta <= 0.0 {
            return bad(
                "beta",
                format!("[objective]: `beta` must be positive, got {}", self.beta),
            );
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return bad(
                "label_smoothing",
                format!(
                    "[objective]: `label_smoothing` must be in [0, 0.5), got {}",
                    self.label_smoothing
                ),
            );
        }
        for (k, v) in [
            ("gamma", self.gamma),
            ("nll_weight", self.nll_weight),
            ("desirable_weight", self.desirable_weight),
            ("undesirable_weight", self.undesirable_weight),
        ] {
            if v < 0.0 {
                return bad(
                    k,
                    format!("[objective]: `{k}` must not be negative, got {v}"),
                );
            }
        }
        Ok(())
    }

    /// Whether the objective trains on preference rows.
    pub fn is_preference(&self) -> bool {
        self.kind != ObjectiveKind::Lm
    }

    /// Whether the objective compares the model with a reference.
    pub fn needs_reference(&self) -> bool {
        matches!(
            self.kind,
            ObjectiveKind::Dpo | ObjectiveKind::Ipo | ObjectiveKind::Kto
        )
    }
}

/// `kind` alone, decoded by serde (its error lists the kinds).
#[derive(Deserialize)]
struct KindOnly {
    kind: ObjectiveKind,
}

impl ObjectiveKind {
    /// The kind's name in the recipe.
    pub fn name(self) -> &'static str {
        match self {
            ObjectiveKind::Lm => "lm",
            ObjectiveKind::Dpo => "dpo",
            ObjectiveKind::Ipo => "ipo",
            ObjectiveKind::Orpo => "orpo",
            ObjectiveKind::Simpo => "simpo",
            ObjectiveKind::Kto => "kto",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Result<Objective> {
        let t: toml::Table = toml::from_str(s).map_err(|e| Error::Config(e.to_string()))?;
        Objective::decode(&t)
    }

    #[test]
    fn each_kind_takes_its_own_keys() -> Result<()> {
        let o = decode("kind = \"dpo\"\nbeta = 0.2\nlabel_smoothing = 0.1\nreference = \"base\"")?;
        assert_eq!(
            (o.kind, o.beta, o.reference),
            (ObjectiveKind::Dpo, 0.2, Reference::Base)
        );
        let e = decode("kind = \"orpo\"\ngamma = 1")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("unknown field `gamma`") && e.contains("`beta`")));
        let e = decode("kind = \"ppo\"").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("ppo") && e.contains("dpo")));
        assert!(decode("kind = \"dpo\"\nbeta = -1").is_err());
        assert!(decode("kind = \"dpo\"\nlabel_smoothing = 0.5").is_err());
        assert!(decode("kind = \"kto\"\nreference = 3").is_err());
        assert_eq!(decode("")?.kind, ObjectiveKind::Lm);
        Ok(())
    }
}
