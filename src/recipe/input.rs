//! The model input, stated once: `[model.input]` axes, or, when they are omitted, the batch of
//! the training run (`[train] batch_size` by `[data] seq_len` tokens, or by the number of csv
//! `features`). When both are given they must agree, and the error names both places.

use super::decode::join;
use super::raw::RNode;
use super::resolve::Resolved;
use super::sections::DeclaredInput;
use super::source::Diagnostic;
use crate::data::spec::DataSpec;
use crate::layers::Axes;
use crate::spec::{InputRoles, InputSpec, TrainConfig};

/// The batch a training run feeds the model: (axis, size, where the size is set) for the batch
/// and the sequence (or features) axes, and the input dtype.
struct TrainingBatch {
    axes: [(&'static str, i64, &'static str); 2],
    dtype: tch::Kind,
}

impl TrainingBatch {
    /// The input it makes: its axes, dtype and roles.
    fn input(&self) -> InputSpec {
        let [(b, _, _), (item, _, key)] = self.axes;
        InputSpec {
            axes: self
                .axes
                .iter()
                .map(|(n, s, _)| (n.to_string(), *s))
                .collect(),
            dtype: self.dtype,
            roles: Some(match key {
                "data.features" => InputRoles::features(b, item),
                _ => InputRoles::tokens(b, item),
            }),
        }
    }
}

fn training_batch(train: &TrainConfig, data: &DataSpec) -> Option<TrainingBatch> {
    let batch = ("batch", train.batch_size as i64, "train.batch_size");
    match data.features() {
        Some(c) => Some(TrainingBatch {
            axes: [
                batch,
                ("features", c.features.len() as i64, "data.features"),
            ],
            dtype: tch::Kind::Float,
        }),
        None => Some(TrainingBatch {
            axes: [batch, ("seq", data.seq_len()? as i64, "data.seq_len")],
            dtype: tch::Kind::Int64,
        }),
    }
}

fn key_path(dotted: &str) -> Vec<String> {
    dotted.split('.').map(String::from).collect()
}

/// Where the key at a dotted path is set: `file:line:col`.
fn position(res: &Resolved, dotted: &str) -> String {
    res.root
        .loc_of(&key_path(dotted))
        .map(|l| res.sources.position(&l))
        .unwrap_or_else(|| "<unknown>".into())
}

/// The effective model input (see the module docs).
pub fn resolve(
    res: &Resolved,
    declared: Option<DeclaredInput>,
    train: Option<&TrainConfig>,
    data: Option<&DataSpec>,
) -> Result<Option<InputSpec>, Diagnostic> {
    let batch = match (train, data) {
        (Some(t), Some(d)) => training_batch(t, d),
        _ => None,
    };
    let Some(declared) = declared else {
        return Ok(batch.map(|b| b.input()));
    };
    let axes = match (declared.axes, &batch) {
        (Some(axes), _) => axes,
        (None, Some(b)) => b.axes.iter().map(|(n, s, _)| (n.to_string(), *s)).collect(),
        (None, None) => {
            return Err(
                Diagnostic::new("`[model.input]` needs `axes = { name = size, ... }`")
                    .at(declared.loc)
                    .key("model.input"),
            )
        }
    };
    if let Some(b) = &batch {
        check_agrees(res, &axes, b)?;
    }
    let dtype = declared
        .dtype
        .or(batch.as_ref().map(|b| b.dtype))
        .unwrap_or(tch::Kind::Float);
    // The training data says what the second axis holds; else the dtype does.
    let mut input = InputSpec::new(axes, dtype);
    if let Some(d) = data {
        input.roles = InputRoles::of_axes(&input.axes, d.is_lm());
    }
    Ok(Some(input))
}

/// Declared axes and the training batch must have the same sizes, axis by axis (the trainer
/// takes the first axis as the batch and the second as the sequence or features).
fn check_agrees(res: &Resolved, axes: &Axes, b: &TrainingBatch) -> Result<(), Diagnostic> {
    if axes.len() != 2 {
        // The trainer reports a wrong number of axes itself.
        return Ok(());
    }
    for ((name, &size), (_, want, key)) in axes.iter().zip(&b.axes) {
        if size == *want {
            continue;
        }
        let at = vec![
            "model".to_string(),
            "input".to_string(),
            "axes".to_string(),
            name.clone(),
        ];
        let loc = res.root.lookup(&at).and_then(|n: &RNode| n.loc.clone());
        let (section, field) = key.split_once('.').unwrap_or((key, ""));
        let what = if *key == "data.features" {
            format!("`[data] features` has {want} columns")
        } else {
            format!("`[{section}] {field}` is {want}")
        };
        // When the training side comes from `--set`, that is what the user just changed: point
        // at it, and name the recipe's line in the note.
        let set_loc = res
            .root
            .lookup(&key_path(key))
            .and_then(|n: &RNode| n.loc.clone())
            .filter(|l| {
                res.sources
                    .file(l.file)
                    .is_some_and(|f| f.name.starts_with("--set"))
            });
        if let Some(sl) = set_loc {
            let recipe_at = loc
                .as_ref()
                .map(|l| res.sources.position(l))
                .unwrap_or_else(|| "<unknown>".into());
            return Err(Diagnostic::new(format!(
                "{what}, but `[model.input]` axis `{name}` has size {size}"
            ))
            .at(Some(sl))
            .key(key.to_string())
            .note(format!(
                "`model.input.axes.{name}` is set at {recipe_at}; state the size once (omit `[model.input] axes` to derive it, or --set it too)"
            )));
        }
        return Err(Diagnostic::new(format!(
            "`[model.input]` axis `{name}` has size {size}, but {what}"
        ))
        .at(loc)
        .key(join(&at))
        .note(format!(
            "`{key}` is set at {}; state the size once (omit `[model.input] axes` to derive it)",
            position(res, key)
        )));
    }
    Ok(())
}
