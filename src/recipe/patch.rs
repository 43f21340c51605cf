//! Applying `[[patch]]`es: each selects subtrees with a text selector and replaces, wraps,
//! inserts next to, removes, freezes, checkpoints or adapts them. Every patch is one rewrite of
//! the assembly engine ([`crate::assembly`]), which places the layers and makes their
//! parameters (see [`crate::assembly::structure`]); this module builds a patch's `with` table
//! and locates the engine's errors at the patch. Patches apply in order; unchanged parts of the
//! tree (and all their parameters) are shared. `wrap` needs a container kind: the selected
//! subtree becomes the `delta` of a `Residual`, or the first child of a sequence or branch
//! kind.

use super::decode::join;
use super::model::ModelBuilder;
use super::raw::{REntry, RNode, RVal};
use super::source::{Diagnostic, Loc};
use super::{Action, PatchSpec};
use crate::assembly::{self, MakeLayer, Place, Problem, Rewrite, RewriteError, Select};
use crate::layers::toolshed::LoraConfig;
use crate::tree::{Builder, ChildLayout, Node};
use std::cell::RefCell;

fn shifted(loc: &Option<Loc>, column: usize) -> Option<Loc> {
    loc.as_ref().map(|l| {
        // +1 for the opening quote of the string.
        let start = l.span.start + column;
        Loc {
            file: l.file,
            span: start..start + 1,
        }
    })
}

fn build_with(mb: &ModelBuilder<'_>, p: &PatchSpec, path: &[String]) -> Result<Node, Diagnostic> {
    let with = p
        .with
        .as_ref()
        .ok_or_else(|| Diagnostic::new("this patch has no `with`").at(p.loc.clone()))?;
    let kp = vec!["patch".to_string(), p.index.to_string(), "with".to_string()];
    mb.build(with, path, &kp)
}

/// An `Identity` layer table: the placeholder in a wrapper's slot that the selected subtree
/// then replaces.
fn identity_placeholder() -> REntry {
    let kind = REntry {
        key_loc: None,
        node: RNode {
            val: RVal::Str("Identity".into()),
            loc: None,
        },
    };
    REntry {
        key_loc: None,
        node: RNode {
            val: RVal::Table([("type".to_string(), kind)].into_iter().collect()),
            loc: None,
        },
    }
}

fn wrap_node(
    mb: &ModelBuilder<'_>,
    p: &PatchSpec,
    path: &[String],
    old: &Node,
) -> Result<Node, Diagnostic> {
    let with = p
        .with
        .as_ref()
        .ok_or_else(|| Diagnostic::new("this patch has no `with`").at(p.loc.clone()))?;
    let kind = with
        .as_table()
        .and_then(|t| t.get("type"))
        .and_then(|e| match &e.node.val {
            RVal::Str(s) => Some(s.clone()),
            _ => None,
        });
    let kp = vec!["patch".to_string(), p.index.to_string(), "with".to_string()];
    let layout = kind.as_deref().and_then(|k| {
        with.as_table()
            .and_then(|t| mb.layout_of(k, t))
            .map(|l| (k, l))
    });
    match layout {
        Some((k, ChildLayout::Slots { wrap: Some(slot), .. })) => {
            let mut t = with.as_table().cloned().unwrap_or_default();
            if t.contains_key(slot) {
                return Err(Diagnostic::new(format!(
                    "`wrap` puts the selected subtree in the {k}'s `{slot}`; do not declare `{slot}`"
                ))
                .at(with.loc.clone())
                .key(join(&kp)));
            }
            t.insert(slot.to_string(), identity_placeholder());
            let n = mb.build(
                &RNode {
                    val: RVal::Table(t),
                    loc: with.loc.clone(),
                },
                path,
                &kp,
            )?;
            Ok(n.with_child(slot, old.clone()))
        }
        Some((_, ChildLayout::Sequence { .. })) => {
            let n = mb.build(with, path, &kp)?;
            let mut children = vec![("0".to_string(), old.clone())];
            let numeric = n.children().iter().all(|(c, _)| c.parse::<usize>().is_ok());
            for (i, (name, c)) in n.children().iter().enumerate() {
                let name = if numeric {
                    (i + 1).to_string()
                } else {
                    name.clone()
                };
                children.push((name, c.clone()));
            }
            if !numeric {
                children[0].0 = "wrapped".to_string();
            }
            Ok(n.with_children(children))
        }
        _ => Err(Diagnostic::new(format!(
            "`wrap` needs a container kind for `with` (Residual, Sequential, NamedGroup, BranchAndAddTogether, ...), got {}",
            kind.map(|k| format!("`{k}`")).unwrap_or_else(|| "no `type`".into())
        ))
        .at(with.loc.clone())
        .key(join(&kp))),
    }
}

/// The settings of an `action = "lora"` patch: `with = { rank, alpha, dropout, dora }`
/// (peft's defaults when absent).
fn lora_settings(p: &PatchSpec) -> Result<LoraConfig, Diagnostic> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        rank: Option<i64>,
        alpha: Option<f64>,
        dropout: Option<f64>,
        dora: Option<bool>,
    }
    let kp = format!("patch.{}.with", p.index);
    let table = match p.with.as_ref().map(|w| w.to_toml()) {
        Some(toml::Value::Table(t)) => t,
        None => toml::Table::new(),
        Some(_) => {
            return Err(Diagnostic::new(
                "`with` of a `lora` patch is a table: { rank = 8, alpha = 16.0 }",
            )
            .at(p.loc.clone())
            .key(kp))
        }
    };
    let bad = |e: crate::Error| {
        Diagnostic::new(e.to_string())
            .at(p.with.as_ref().and_then(|w| w.loc.clone()))
            .key(kp.clone())
    };
    let s: Settings =
        crate::tree::registry::decode_config("a `lora` patch's `with`", &table).map_err(bad)?;
    let d = LoraConfig::default();
    let cfg = LoraConfig {
        rank: s.rank.unwrap_or(d.rank),
        alpha: s.alpha.unwrap_or(d.alpha),
        dropout: s.dropout.unwrap_or(d.dropout),
        dora: s.dora.unwrap_or(d.dora),
    };
    cfg.validate().map_err(bad)?;
    Ok(cfg)
}

/// The engine's action for patch `p`; a replace, wrap or insert puts layer `layer` in place.
fn action_of(p: &PatchSpec, layer: usize) -> Result<assembly::Action, Diagnostic> {
    Ok(match p.action {
        Action::Remove => assembly::Action::Remove,
        Action::Freeze => assembly::Action::Freeze,
        Action::Checkpoint => assembly::Action::Checkpoint,
        Action::Lora => assembly::Action::Lora {
            config: lora_settings(p)?,
            init: None,
        },
        Action::Replace => assembly::Action::Replace { layer },
        Action::Wrap => assembly::Action::Wrap { layer },
        Action::InsertBefore | Action::InsertAfter => assembly::Action::Insert {
            layer,
            after: p.action == Action::InsertAfter,
        },
    })
}

/// Applies the patches in order.
pub fn apply_patches(
    mut tree: Node,
    patches: &[PatchSpec],
    mb: &ModelBuilder<'_>,
) -> Result<Node, Diagnostic> {
    let layers = PatchLayers {
        mb,
        patches,
        failed: RefCell::new(None),
    };
    for (k, p) in patches.iter().enumerate() {
        let kp = format!("patch.{}.select", p.index);
        let select = Select::Selectors {
            selectors: vec![p.select.clone()],
            expect_count: p.expect_count,
        };
        let patch_err = |e: crate::Error| {
            Diagnostic::new(format!("patch {} ({}) failed: {e}", p.index, p.select))
                .at(p.loc.clone())
                .key(format!("patch.{}", p.index))
        };
        // Every action is a rewrite of the assembly engine; `with` tables are built by
        // `layers` (patch `k`'s is layer `k`).
        let action = action_of(p, k)?;
        let cx = assembly::Context::new(mb.builder).with_layers(&layers);
        tree = match assembly::apply(tree, &[Rewrite::new(select, action)], &cx) {
            Ok(t) => t,
            // A `with` table that failed to build has its own located diagnostic.
            Err(e) => match layers.failed.take() {
                Some(d) => return Err(d),
                None => return Err(located(p, &kp, e, &patch_err)),
            },
        };
        check_depth(&tree, &patch_err)?;
    }
    Ok(tree)
}

/// The layers of a recipe's patches: layer `k` is patch `k`'s `with` table, built at the
/// place the engine gives. A table that fails keeps its located diagnostic in `failed`.
struct PatchLayers<'m, 'b> {
    mb: &'m ModelBuilder<'b>,
    patches: &'m [PatchSpec],
    failed: RefCell<Option<Diagnostic>>,
}

impl MakeLayer for PatchLayers<'_, '_> {
    fn make(&self, layer: usize, place: &Place<'_>, _: &Builder) -> crate::Result<Node> {
        let p = self
            .patches
            .get(layer)
            .ok_or_else(|| crate::Error::Config(format!("no patch {layer}")))?;
        let built = match place.wrapped {
            Some(old) => wrap_node(self.mb, p, place.path, old),
            None => build_with(self.mb, p, place.path),
        };
        built.map_err(|d| {
            *self.failed.borrow_mut() = Some(d);
            crate::Error::Config(format!("patch {} could not build its `with`", p.index))
        })
    }
}

fn check_depth(
    tree: &Node,
    patch_err: &dyn Fn(crate::Error) -> Diagnostic,
) -> Result<(), Diagnostic> {
    let mut depth = 0;
    tree.walk(&mut |path, _| depth = depth.max(path.len()));
    if depth > MAX_TREE_DEPTH {
        return Err(patch_err(crate::Error::Config(format!(
            "the patched tree is {depth} levels deep; pzt accepts at most {MAX_TREE_DEPTH} (are wraps nesting one inside the other?)"
        ))));
    }
    Ok(())
}

/// The engine's error about patch `p`, at its key.
fn located(
    p: &PatchSpec,
    kp: &str,
    e: RewriteError,
    patch_err: &dyn Fn(crate::Error) -> Diagnostic,
) -> Diagnostic {
    match e.problem {
        Problem::BadSelector {
            message, column, ..
        } => Diagnostic::new(format!("bad selector: {message}"))
            .at(shifted(&p.select_loc, column))
            .key(kp.to_string()),
        Problem::Count {
            found,
            expected,
            paths,
            ..
        } => Diagnostic::new(format!(
            "selector `{}` matched {found} subtrees, but `expect_count` is {expected}",
            p.select
        ))
        .at(p.select_loc.clone())
        .key(kp.to_string())
        .note(if paths.is_empty() {
            "matches: none".to_string()
        } else {
            format!("matches: {}", paths.join(", "))
        }),
        Problem::MatchesNothing { .. } => {
            Diagnostic::new(format!("selector `{}` matches nothing", p.select))
                .at(p.select_loc.clone())
                .key(kp.to_string())
                .note("run `pzt select RECIPE 'SELECTOR'` to see what a selector matches")
        }
        Problem::Failed(e) => patch_err(e),
        Problem::NoLinear { .. } => patch_err(crate::Error::Config(
            "the selection holds no contracting Linear to adapt".into(),
        )),
        other => patch_err(
            RewriteError {
                index: p.index,
                problem: other,
            }
            .into_error(),
        ),
    }
}

/// The deepest a patched tree may be: far beyond any model (a Llama is under 10 levels), and
/// shallow enough that every walk over paths stays fast.
const MAX_TREE_DEPTH: usize = 256;

/// The patches of `recipe` as rewrites of a [`crate::assembly::ModelSpec`], with the layers
/// their `with` tables make (built at the engine's place by a builder of `recipe`'s tables;
/// `chain` is the checkpoints the recipe was reached through).
pub(super) fn patch_rewrites(
    recipe: &super::Recipe,
    registry: &crate::tree::Registry,
    chain: &[std::path::PathBuf],
) -> Result<(Vec<Rewrite>, assembly::NewLayers), Diagnostic> {
    let mut rewrites = vec![];
    let mut layers = assembly::NewLayers::default();
    for p in &recipe.patches {
        let select = Select::Selectors {
            selectors: vec![p.select.clone()],
            expect_count: p.expect_count,
        };
        let layer = layers.0.len();
        let action = action_of(p, layer)?;
        let structural = matches!(
            action,
            assembly::Action::Replace { .. }
                | assembly::Action::Wrap { .. }
                | assembly::Action::Insert { .. }
        );
        if structural {
            let (r, reg, patch, chain) =
                (recipe.clone(), registry.clone(), p.clone(), chain.to_vec());
            layers.0.push(std::sync::Arc::new(move |place, builder| {
                let mut mb = ModelBuilder::new(builder, &reg);
                mb.base_dir = r.base_dir();
                mb.chain = chain.clone();
                let built = match place.wrapped {
                    Some(old) => wrap_node(&mb, &patch, place.path, old),
                    None => build_with(&mb, &patch, place.path),
                };
                built.map_err(|d| super::recipe_error(&r.resolved.sources, d))
            }));
        }
        rewrites.push(Rewrite::new(select, action));
    }
    Ok((rewrites, layers))
}
