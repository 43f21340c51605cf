//! `[strategy]`: how a run fine-tunes its model. Every strategy is a rewrite of the model tree
//! through selections (the toolshed, [`crate::layers::toolshed`]): `kind = "lora"` adapts the
//! `[strategy.lora] targets` and freezes everything else, `trainable` keeps only some
//! parameters training, `freeze` turns training off under selectors, and
//! `checkpoint_activations` recomputes the selected subtrees in the backward pass.

use super::train::bad;
use crate::base::Result;
use crate::layers::toolshed::LoraConfig;
use serde::{Deserialize, Serialize};

/// One selector or several.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings.
    pub fn items(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `full` (the default) or `lora`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StrategyKind {
    #[default]
    Full,
    Lora,
}

/// `[strategy.lora]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoraSection {
    /// A selector, HF module names (`q_proj`, ...) for a model loaded from an HF directory, or
    /// `"all-linear"`. Required unless `init_from` gives them.
    pub targets: Option<OneOrMany>,
    /// Default 8 (or the adapter's `r`).
    pub rank: Option<i64>,
    /// Default 8.0 (or the adapter's `lora_alpha`); the scale is alpha / rank.
    pub alpha: Option<f64>,
    /// Dropout on the adapter's input while training (default 0).
    pub dropout: Option<f64>,
    /// Weight-decomposed LoRA (default false).
    pub dora: Option<bool>,
    /// A PEFT adapter directory to start from.
    pub init_from: Option<String>,
}

/// `[strategy]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StrategyConfig {
    pub kind: StrategyKind,
    /// Parameters under these selectors are not trained.
    pub freeze: Option<OneOrMany>,
    /// With `kind = "full"`, only these train; with `lora`, these train besides the adapters.
    pub trainable: Option<OneOrMany>,
    /// Each match is recomputed in the backward pass.
    pub checkpoint_activations: Option<OneOrMany>,
    pub lora: Option<LoraSection>,
    /// QLoRA: the frozen Linear weights of the decoder blocks kept as NF4 or int8.
    pub quantize: Option<QuantFormat>,
    /// Selectors whose Linears stay unquantized (the output head and the embeddings are
    /// outside the blocks anyway).
    pub quantize_skip: Option<OneOrMany>,
}

/// `[strategy] quantize`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QuantFormat {
    Nf4,
    Int8,
}

impl QuantFormat {
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Nf4 => "nf4",
            QuantFormat::Int8 => "int8",
        }
    }
}

impl StrategyConfig {
    /// Checks values that need no model.
    pub fn validate(&self) -> Result<()> {
        if self.quantize.is_some() && self.kind != StrategyKind::Lora {
            return bad(
                "quantize",
                "[strategy]: `quantize` keeps a frozen base quantized under LoRA adapters; it needs kind = \"lora\"".into(),
            );
        }
        if self.quantize_skip.is_some() && self.quantize.is_none() {
            return bad(
                "quantize_skip",
                "[strategy]: `quantize_skip` needs `quantize = \"nf4\"` or \"int8\"".into(),
            );
        }
        match (self.kind, &self.lora) {
            (StrategyKind::Full, Some(_)) => {
                return bad(
                    "kind",
                    "[strategy]: a `[strategy.lora]` table needs kind = \"lora\"".into(),
                )
            }
            (StrategyKind::Lora, None) => {
                return bad(
                    "kind",
                    "[strategy]: kind = \"lora\" needs a `[strategy.lora]` table with `targets` (or `init_from`)".into(),
                )
            }
            _ => {}
        }
        if let Some(l) = &self.lora {
            if l.targets.is_none() && l.init_from.is_none() {
                return bad(
                    "lora.targets",
                    "[strategy.lora]: `targets` is required (a selector, HF module names such as [\"q_proj\", \"v_proj\"], or \"all-linear\") unless `init_from` names a PEFT adapter".into(),
                );
            }
            let problems = [
                ("lora.rank", l.rank.and_then(LoraConfig::rank_problem)),
                ("lora.alpha", l.alpha.and_then(LoraConfig::alpha_problem)),
                (
                    "lora.dropout",
                    l.dropout.and_then(LoraConfig::dropout_problem),
                ),
            ];
            if let Some((field, Some(p))) = problems.into_iter().find(|(_, p)| p.is_some()) {
                return bad(field, format!("[strategy.lora]: {p}"));
            }
        }
        for (key, v) in [
            ("freeze", &self.freeze),
            ("trainable", &self.trainable),
            ("checkpoint_activations", &self.checkpoint_activations),
        ] {
            if let Some(v) = v {
                if v.items().is_empty() || v.items().iter().any(|s| s.trim().is_empty()) {
                    return bad(key, format!("[strategy]: `{key}` has an empty selector"));
                }
            }
        }
        if let Some(l) = &self.lora {
            if let Some(t) = &l.targets {
                if t.items().is_empty() {
                    return bad("lora.targets", "[strategy.lora]: `targets` is empty".into());
                }
            }
        }
        Ok(())
    }

    /// Whether the strategy changes nothing.
    pub fn is_plain(&self) -> bool {
        *self == StrategyConfig::default()
    }
}
