//! Decoding the `[run]`, `[model]` (its `input` and `dtype`) and `[[patch]]` sections of a
//! resolved recipe, strictly, with located errors.

use super::decode::{check_keys, join, key_loc, opt_axes, opt_int, opt_str, table};
use super::raw::{RNode, RTable, RVal};
use super::resolve::Resolved;
use super::source::{did_you_mean, Diagnostic, Loc};
use super::{Action, PatchSpec};
use crate::layers::Axes;
use crate::spec::RunSection;
use std::path::PathBuf;

/// An input dtype: the float kinds, int64 or int32.
fn parse_kind(s: &str) -> Option<tch::Kind> {
    crate::base::dtype::from_name(s).filter(|k| {
        crate::base::dtype::is_float(*k) || matches!(k, tch::Kind::Int64 | tch::Kind::Int)
    })
}

/// `[run]`.
pub fn run(res: &Resolved, root: &RTable) -> Result<RunSection, Diagnostic> {
    let stem = res
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    Ok(match root.get("run") {
        None => RunSection {
            name: stem.clone(),
            seed: 0,
            out_dir: PathBuf::from("runs").join(&stem),
        },
        Some(e) => {
            let kp = vec!["run".to_string()];
            let t = table(&e.node, &kp, "`[run]`")?;
            check_keys(t, &["name", "seed", "out_dir"], &kp, "`[run]`")?;
            let name = opt_str(t, "name", &kp)?.unwrap_or(stem);
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
                return Err(Diagnostic::new(format!(
                    "run name `{}` must be one path component: non-empty, not `.` or `..`, without `/`, `\\` or NUL",
                    name.escape_debug()
                ))
                .at(key_loc(t, "name"))
                .key("run.name"));
            }
            let seed = match opt_int(t, "seed", &kp)? {
                Some(s) if s >= 0 => s as u64,
                Some(s) => {
                    return Err(
                        Diagnostic::new(format!("`seed` must be non-negative, got {s}"))
                            .at(key_loc(t, "seed"))
                            .key("run.seed"),
                    )
                }
                None => 0,
            };
            let out_dir = opt_str(t, "out_dir", &kp)?;
            if let Some(d) = &out_dir {
                let p = std::path::Path::new(d.trim_end_matches('/'));
                let is_here = d.trim().is_empty()
                    || p.components()
                        .all(|c| matches!(c, std::path::Component::CurDir))
                    || p.file_name().is_none()
                    || d.contains('\0');
                if is_here {
                    return Err(Diagnostic::new(format!(
                        "`out_dir` = {d:?} is not a run directory: name a directory of its own (the run writes and truncates files there)"
                    ))
                    .at(key_loc(t, "out_dir"))
                    .key("run.out_dir"));
                }
            }
            let out_dir = out_dir
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("runs").join(&name));
            RunSection {
                name,
                seed,
                out_dir,
            }
        }
    })
}

/// What `[model.input]` declares (its `axes` may be left to be derived from `[train]` and
/// `[data]`).
#[derive(Debug, Clone)]
pub struct DeclaredInput {
    pub axes: Option<Axes>,
    pub dtype: Option<tch::Kind>,
    /// Where `[model.input]` is.
    pub loc: Option<Loc>,
}

/// The error of a recipe without `[model]` where one is needed.
pub fn no_model(res: &Resolved) -> Diagnostic {
    Diagnostic::new("the recipe has no `[model]` section").at(res.root.loc.clone().or(Some(Loc {
        file: 0,
        span: 0..0,
    })))
}

/// The `[model]` section: the layer table (without `input` and `dtype`), what `[model.input]`
/// declares, and the parameter dtype.
pub fn model(
    res: &Resolved,
    root: &RTable,
) -> Result<(RNode, Option<DeclaredInput>, tch::Kind), Diagnostic> {
    let Some(me) = root.get("model") else {
        return Err(no_model(res));
    };
    let kp = vec!["model".to_string()];
    let mt = table(&me.node, &kp, "`[model]`")?;
    let mut input = None;
    if let Some(ie) = mt.get("input") {
        let ikp = vec!["model".to_string(), "input".to_string()];
        let it = table(&ie.node, &ikp, "`[model.input]`")?;
        check_keys(it, &["axes", "dtype"], &ikp, "`[model.input]`")?;
        let axes = opt_axes(it, "axes", &ikp)?;
        let dtype = match opt_str(it, "dtype", &ikp)? {
            None => None,
            Some(d) => Some(parse_kind(&d).ok_or_else(|| {
                Diagnostic::new(format!("unknown dtype `{d}`"))
                    .at(key_loc(it, "dtype"))
                    .key("model.input.dtype")
                    .note("expected one of: float32, float64, bfloat16, float16, int64, int32")
            })?),
        };
        input = Some(DeclaredInput {
            axes,
            dtype,
            loc: ie.node.loc.clone(),
        });
    }
    let param_dtype = match opt_str(mt, "dtype", &kp)? {
        None => tch::Kind::Float,
        Some(d) => match parse_kind(&d) {
            Some(k) if crate::base::dtype::is_float(k) => k,
            _ => {
                return Err(Diagnostic::new(format!("unknown parameter dtype `{d}`"))
                    .at(key_loc(mt, "dtype"))
                    .key("model.dtype")
                    .note("expected one of: float32, float64, bfloat16, float16"))
            }
        },
    };
    let mut model = me.node.clone();
    if let RVal::Table(t) = &mut model.val {
        t.shift_remove("input");
        t.shift_remove("dtype");
    }
    Ok((model, input, param_dtype))
}

/// The `[[patch]]`es, in order.
pub fn patches(root: &RTable) -> Result<Vec<PatchSpec>, Diagnostic> {
    let Some(pe) = root.get("patch") else {
        return Ok(vec![]);
    };
    let items = match &pe.node.val {
        RVal::Array(a) => a.clone(),
        RVal::Table(_) => vec![pe.node.clone()],
        _ => {
            return Err(
                Diagnostic::new("`patch` must be an array of tables: [[patch]]")
                    .at(pe.key_loc.clone())
                    .key("patch"),
            )
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| patch(i, item))
        .collect()
}

const ACTIONS: [&str; 8] = [
    "replace",
    "wrap",
    "insert_before",
    "insert_after",
    "remove",
    "lora",
    "freeze",
    "checkpoint",
];

/// `[[patch]]` number `i`.
fn patch(i: usize, item: &RNode) -> Result<PatchSpec, Diagnostic> {
    let pkp = vec!["patch".to_string(), i.to_string()];
    let t = table(item, &pkp, "a `[[patch]]`")?;
    check_keys(
        t,
        &["select", "action", "with", "expect_count"],
        &pkp,
        "a `[[patch]]`",
    )?;
    let select = opt_str(t, "select", &pkp)?.ok_or_else(|| {
        Diagnostic::new("a `[[patch]]` needs `select = \"<selector>\"`")
            .at(item.loc.clone())
            .key(join(&pkp))
    })?;
    let action_s = opt_str(t, "action", &pkp)?.ok_or_else(|| {
        Diagnostic::new("a `[[patch]]` needs `action`")
            .at(item.loc.clone())
            .key(join(&pkp))
            .note(format!("expected one of: {}", ACTIONS.join(", ")))
    })?;
    let action = patch_action(i, t, &action_s)?;
    let with = t.get("with").map(|e| e.node.clone());
    let no_with = matches!(action, Action::Remove | Action::Freeze | Action::Checkpoint);
    if no_with && with.is_some() {
        return Err(Diagnostic::new(format!("`{action_s}` takes no `with`"))
            .at(key_loc(t, "with"))
            .key(format!("patch.{i}.with")));
    }
    if !no_with && action != Action::Lora && with.is_none() {
        return Err(
            Diagnostic::new(format!("`{action_s}` needs `with = {{ type = ... }}`"))
                .at(item.loc.clone())
                .key(join(&pkp)),
        );
    }
    let expect_count = match opt_int(t, "expect_count", &pkp)? {
        Some(n) if n >= 0 => Some(n as usize),
        Some(n) => {
            return Err(
                Diagnostic::new(format!("`expect_count` must be non-negative, got {n}"))
                    .at(key_loc(t, "expect_count"))
                    .key(format!("patch.{i}.expect_count")),
            )
        }
        None => None,
    };
    Ok(PatchSpec {
        index: i,
        select,
        select_loc: t.get("select").and_then(|e| e.node.loc.clone()),
        action,
        with,
        expect_count,
        loc: item.loc.clone(),
    })
}

fn patch_action(i: usize, t: &RTable, action: &str) -> Result<Action, Diagnostic> {
    Ok(match action {
        "replace" => Action::Replace,
        "wrap" => Action::Wrap,
        "insert_before" => Action::InsertBefore,
        "insert_after" => Action::InsertAfter,
        "remove" => Action::Remove,
        "lora" => Action::Lora,
        "freeze" => Action::Freeze,
        "checkpoint" => Action::Checkpoint,
        other => {
            let mut d = Diagnostic::new(format!("unknown patch action `{other}`"))
                .at(t.get("action").and_then(|e| e.node.loc.clone()))
                .key(format!("patch.{i}.action"));
            if let Some(s) = did_you_mean(other, ACTIONS) {
                d = d.label(format!("did you mean `{s}`?"));
            }
            return Err(d.note(format!("expected one of: {}", ACTIONS.join(", "))));
        }
    })
}
