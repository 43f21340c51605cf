//! Saving intermediates (Penzai's `save_intermediates`): a `SaveIntermediate` layer after each
//! selected subtree keeps that subtree's output in a state variable, read back after a forward
//! pass.
//!
//! A selected subtree that is a child of a `Sequential` (or a relative that runs its children
//! in order) gets a `SaveIntermediate` sibling right after it, named `save_<its name>`, so the paths of the model's own nodes do not change.
//! Elsewhere (the root, a slot such as `Residual.delta`, a branch of a `BranchAnd*Together`)
//! the subtree is wrapped in a
//! `Sequential` of itself (child `0`) and the `SaveIntermediate` (child `save`). The edited
//! tree shares every parameter with the original.

use crate::base::Result;
use crate::layers::grouping::{NamedGroup, Sequential};
use crate::layers::misc::SaveIntermediate;
use crate::params::{StateEntry, StateVariable};
use crate::tree::select::unused_name;
use crate::tree::{Node, Selection};
use std::collections::HashSet;

/// A saved output: the selected subtree's path (dotted, `""` for the root) and the state
/// variable its output lands in.
#[derive(Debug, Clone)]
pub struct Saved {
    pub path: String,
    pub var: StateVariable,
}

fn saver(path: &str, out: &mut Vec<Saved>) -> Node {
    let label = if path.is_empty() {
        "saved.<root>".to_string()
    } else {
        format!("saved.{path}")
    };
    let var = StateVariable::new(label, None);
    out.push(Saved {
        path: path.to_string(),
        var: var.clone(),
    });
    Node::new(SaveIntermediate {}).with_state("value", StateEntry::Var(var))
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The selected paths and every prefix of them (the nodes a rewrite has to go through).
struct Marks {
    hit: HashSet<String>,
    through: HashSet<String>,
}

fn rebuild(n: &Node, path: &str, sel: &Marks, out: &mut Vec<Saved>) -> Node {
    if !sel.through.contains(path) {
        return n.clone();
    }
    // Only where children run one after the other does a sibling see a child's output (a
    // branch combinator would take the saver as one more branch).
    let seq = n.layer_as::<Sequential>().is_some() || n.layer_as::<NamedGroup>().is_some();
    let mut taken: HashSet<String> = n.children().iter().map(|(k, _)| k.clone()).collect();
    let mut children = Vec::with_capacity(n.children().len());
    for (name, c) in n.children() {
        let p = join(path, name);
        let c2 = rebuild(c, &p, sel, out);
        let hit = sel.hit.contains(&p);
        if hit && seq {
            children.push((name.clone(), c2));
            let s = unused_name(&taken, format!("save_{name}"));
            taken.insert(s.clone());
            children.push((s, saver(&p, out)));
        } else if hit {
            let wrapped = Sequential::named(vec![
                ("0".to_string(), c2),
                ("save".to_string(), saver(&p, out)),
            ]);
            children.push((name.clone(), wrapped));
        } else {
            children.push((name.clone(), c2));
        }
    }
    n.clone().with_children(children)
}

/// The model with the output of every subtree `sel` selects saved (see the module docs), and
/// the saved outputs in the order the selection lists them.
pub fn saving_intermediates(sel: &Selection) -> Result<(Node, Vec<Saved>)> {
    Ok(save_at(sel.root(), sel.path_segments()))
}

/// Saves the outputs of the subtrees at `paths` (which may be nested in one another; `[]` is
/// the root), in the order given.
fn save_at(root: &Node, paths: &[Vec<String>]) -> (Node, Vec<Saved>) {
    let mut marks = Marks {
        hit: HashSet::new(),
        through: HashSet::new(),
    };
    for segs in paths {
        if segs.is_empty() {
            continue;
        }
        marks.hit.insert(segs.join("."));
        for k in 0..segs.len() {
            marks.through.insert(segs[..k].join("."));
        }
    }
    let mut saved = vec![];
    let mut tree = rebuild(root, "", &marks, &mut saved);
    if paths.iter().any(|p| p.is_empty()) {
        tree = Sequential::named(vec![
            ("0".to_string(), tree),
            ("save".to_string(), saver("", &mut saved)),
        ]);
    }
    let order: std::collections::HashMap<String, usize> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.join("."), i))
        .collect();
    saved.sort_by_key(|s| order.get(&s.path).copied().unwrap_or(usize::MAX));
    (tree, saved)
}

/// [`saving_intermediates`] of every subtree below the root, nested ones included: the
/// output of every layer, in tree order.
pub fn saving_all_intermediates(tree: &Node) -> Result<(Node, Vec<Saved>)> {
    let mut paths = vec![];
    tree.walk(&mut |p, _| {
        if !p.is_empty() {
            paths.push(p.to_vec());
        }
    });
    Ok(save_at(tree, &paths))
}

/// The saved values, as `(path, value)`, after a forward pass (an error names a subtree
/// whose output was not saved: the forward did not reach it).
pub fn saved_values(saved: &[Saved]) -> Result<Vec<(String, crate::named::Value)>> {
    saved
        .iter()
        .map(|s| {
            s.var.get().map(|v| (s.path.clone(), v)).ok_or_else(|| {
                crate::base::Error::Config(format!(
                    "nothing was saved for `{}`: the forward pass did not run it",
                    if s.path.is_empty() { "<root>" } else { &s.path }
                ))
            })
        })
        .collect()
}
