//! Selections (Penzai's `pz.select`): pick subtrees of a model, then rewrite them.
//!
//! ```text
//! select(&model).at_instances_of("Linear").within("Attention").apply(|path, n| ...)
//! ```
//!
//! A selection holds the root and the paths of the selected subtrees (never nested in each
//! other). Refinements (`at_*`, `within`, `pick_nth`, `invert`) return a new selection;
//! rewrites (`apply`, `set`, `insert_before`, `insert_after`, `remove_from_parent`) return a
//! new tree that shares all unchanged parts, and all parameters, with the old one.

use super::pathset::PathSet;
use super::Node;
use crate::base::{Error, Result};

/// A set of selected subtrees of a tree.
#[derive(Clone, Debug)]
pub struct Selection {
    root: Node,
    selected: Vec<Vec<String>>,
}

/// Selects the root of `tree`.
pub fn select(tree: &Node) -> Selection {
    Selection {
        root: tree.clone(),
        selected: vec![vec![]],
    }
}

type RefineFn<'a> = &'a mut dyn FnMut(&[String], &Node, &mut Vec<Vec<String>>);
type EditFn<'a> = &'a mut dyn FnMut(&[String], &Node) -> Result<Node>;

type MakeFn<'a> = &'a mut dyn FnMut(&[String]) -> Result<Node>;

enum Edit<'a> {
    Apply(EditFn<'a>),
    InsertBefore(MakeFn<'a>),
    InsertAfter(MakeFn<'a>),
    Remove,
}

impl Selection {
    /// A selection of the given paths of `root` (paths that do not exist are dropped; nested
    /// paths keep only the outermost).
    pub fn from_paths(root: &Node, paths: Vec<Vec<String>>) -> Selection {
        let want = PathSet::new(&paths);
        let mut taken = PathSet::default();
        let mut selected: Vec<Vec<String>> = vec![];
        root.walk(&mut |p, _| {
            if want.contains(p) && !taken.inside(p) {
                taken.insert(p.to_vec());
                selected.push(p.to_vec());
            }
        });
        Selection {
            root: root.clone(),
            selected,
        }
    }

    /// The selected paths as segment lists.
    pub fn path_segments(&self) -> &[Vec<String>] {
        &self.selected
    }

    /// The tree this selection is over.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The selected paths, dotted (`""` is the root), in tree order.
    pub fn paths(&self) -> Vec<String> {
        self.selected.iter().map(|p| p.join(".")).collect()
    }

    /// The number of selected subtrees.
    pub fn count(&self) -> usize {
        self.selected.len()
    }

    /// The selected subtrees with their dotted paths.
    pub fn get(&self) -> Vec<(String, &Node)> {
        self.selected
            .iter()
            .filter_map(|p| self.root.get(p).ok().map(|n| (p.join("."), n)))
            .collect()
    }

    /// Fails unless exactly `n` subtrees are selected.
    pub fn assert_count(self, n: usize) -> Result<Selection> {
        if self.count() == n {
            Ok(self)
        } else {
            Err(Error::Select(format!(
                "expected {n} selected subtrees, found {}: [{}]",
                self.count(),
                self.paths().join(", ")
            )))
        }
    }

    fn refine(&self, f: RefineFn<'_>) -> Selection {
        let mut out = vec![];
        for p in &self.selected {
            if let Ok(n) = self.root.get(p) {
                f(p, n, &mut out);
            }
        }
        Selection {
            root: self.root.clone(),
            selected: out,
        }
    }

    /// Moves each selected subtree to its descendant at the dotted relative path (those that
    /// lack it drop out).
    pub fn at_path(&self, rel: &str) -> Selection {
        let segs: Vec<String> = rel
            .split('.')
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
            .collect();
        self.refine(&mut |p, n, out| {
            if n.get(&segs).is_ok() {
                let mut q = p.to_vec();
                q.extend(segs.iter().cloned());
                out.push(q);
            }
        })
    }

    /// Selects, within each selected subtree, the outermost subtrees (including the subtree
    /// itself) for which `pred(path, node)` holds. With `innermost`, the innermost ones.
    pub fn at_subtrees_where(
        &self,
        pred: impl Fn(&[String], &Node) -> bool,
        innermost: bool,
    ) -> Selection {
        self.refine(&mut |p, n, out| {
            fn go(
                n: &Node,
                path: &mut Vec<String>,
                pred: &dyn Fn(&[String], &Node) -> bool,
                innermost: bool,
                out: &mut Vec<Vec<String>>,
            ) -> bool {
                let here = pred(path, n);
                if here && !innermost {
                    out.push(path.clone());
                    return true;
                }
                let mut below = false;
                for (name, c) in n.children() {
                    path.push(name.clone());
                    below |= go(c, path, pred, innermost, out);
                    path.pop();
                }
                if here && !below {
                    out.push(path.clone());
                    return true;
                }
                below || here
            }
            let mut path = p.to_vec();
            go(n, &mut path, &pred, innermost, out);
        })
    }

    /// Selects the outermost instances of a layer kind within each selected subtree.
    pub fn at_instances_of(&self, kind: &str) -> Selection {
        self.at_subtrees_where(|_, n| n.kind() == kind, false)
    }

    /// Keeps the selected subtrees that lie strictly inside an instance of `kind`.
    pub fn within(&self, kind: &str) -> Selection {
        let root = self.root.clone();
        let selected = self
            .selected
            .iter()
            .filter(|p| {
                let mut cur = Some(&root);
                p.iter().any(|seg| {
                    let inside = cur.is_some_and(|n| n.kind() == kind);
                    cur = cur.and_then(|n| n.child(seg).ok());
                    inside
                })
            })
            .cloned()
            .collect();
        Selection { root, selected }
    }

    /// Selects the direct children of each selected subtree.
    pub fn at_children(&self) -> Selection {
        self.refine(&mut |p, n, out| {
            for (name, _) in n.children() {
                let mut q = p.to_vec();
                q.push(name.clone());
                out.push(q);
            }
        })
    }

    /// Keeps only the `n`-th selected subtree (0-based, in tree order; negative counts from
    /// the end). Out of range gives an empty selection.
    pub fn pick_nth(&self, n: i64) -> Selection {
        let len = self.selected.len() as i64;
        let i = if n < 0 { len + n } else { n };
        let selected = if i >= 0 && i < len {
            vec![self.selected[i as usize].clone()]
        } else {
            vec![]
        };
        Selection {
            root: self.root.clone(),
            selected,
        }
    }

    /// Selects the complement: the largest subtrees that neither contain nor lie inside a
    /// selected subtree.
    pub fn invert(&self) -> Selection {
        fn go(n: &Node, path: &mut Vec<String>, sel: &PathSet, out: &mut Vec<Vec<String>>) {
            if sel.inside(path) {
                return; // selected or inside a selected subtree
            }
            if !sel.has_below(path) {
                out.push(path.clone()); // contains no selection: maximal unselected subtree
                return;
            }
            for (name, c) in n.children() {
                path.push(name.clone());
                go(c, path, sel, out);
                path.pop();
            }
        }
        let mut out = vec![];
        go(
            &self.root,
            &mut vec![],
            &PathSet::new(&self.selected),
            &mut out,
        );
        Selection {
            root: self.root.clone(),
            selected: out,
        }
    }

    /// Replaces each selected subtree `n` at `path` by `f(path, n)`.
    pub fn apply(&self, mut f: impl FnMut(&[String], &Node) -> Result<Node>) -> Result<Node> {
        self.edit(Edit::Apply(&mut f))
    }

    /// Replaces each selected subtree by `node` (the same node, so parameters in it are shared
    /// between the places).
    pub fn set(&self, node: &Node) -> Result<Node> {
        self.apply(|_, _| Ok(node.clone()))
    }

    /// Inserts `node` before each selected subtree, which must be a child of a sequence
    /// (Sequential and relatives).
    pub fn insert_before(&self, node: &Node) -> Result<Node> {
        self.edit(Edit::InsertBefore(&mut |_| Ok(node.clone())))
    }

    /// Inserts `node` after each selected subtree, which must be a child of a sequence.
    pub fn insert_after(&self, node: &Node) -> Result<Node> {
        self.edit(Edit::InsertAfter(&mut |_| Ok(node.clone())))
    }

    /// Inserts `make(path)` before (or, with `after`, after) each selected subtree at `path`,
    /// in one rewrite of the tree.
    pub fn insert_each(
        &self,
        after: bool,
        mut make: impl FnMut(&[String]) -> Result<Node>,
    ) -> Result<Node> {
        if after {
            self.edit(Edit::InsertAfter(&mut make))
        } else {
            self.edit(Edit::InsertBefore(&mut make))
        }
    }

    /// Removes each selected subtree from its parent sequence.
    pub fn remove_from_parent(&self) -> Result<Node> {
        self.edit(Edit::Remove)
    }

    fn edit(&self, mut edit: Edit<'_>) -> Result<Node> {
        if self.selected.iter().any(|p| p.is_empty()) && !matches!(edit, Edit::Apply(_)) {
            return Err(Error::Select(
                "the root is selected, and the root has no parent sequence to edit".into(),
            ));
        }
        let sel = PathSet::new(&self.selected);
        rebuild(&self.root, &mut vec![], &sel, &mut edit)
    }
}

fn rebuild(n: &Node, path: &mut Vec<String>, sel: &PathSet, edit: &mut Edit<'_>) -> Result<Node> {
    if let Edit::Apply(f) = edit {
        if sel.contains(path) {
            return f(path, n);
        }
    }
    if !sel.has_below(path) {
        return Ok(n.clone()); // nothing selected below: share the subtree as is
    }
    let mut children: Vec<(String, Node)> = Vec::with_capacity(n.children().len() + 1);
    let mut edited_sequence = false;
    let mut taken: Option<std::collections::HashSet<String>> = None;
    for (name, c) in n.children() {
        path.push(name.clone());
        let hit = sel.contains(path);
        match edit {
            Edit::InsertBefore(make) if hit => {
                let new = make(path)?;
                children.push((fresh_name(n, &new, &mut taken), new));
                children.push((name.clone(), c.clone()));
                edited_sequence = true;
            }
            Edit::InsertAfter(make) if hit => {
                let new = make(path)?;
                children.push((name.clone(), c.clone()));
                children.push((fresh_name(n, &new, &mut taken), new));
                edited_sequence = true;
            }
            Edit::Remove if hit => edited_sequence = true,
            _ => {
                let r = rebuild(c, path, sel, edit).map_err(|e| e.in_child(name));
                path.pop();
                children.push((name.clone(), r?));
                continue;
            }
        }
        path.pop();
    }
    if edited_sequence {
        if !n.is_sequence() {
            return Err(Error::Select(format!(
                "cannot insert into or remove from `{}`: it is a {}, not a sequence \
                 (Sequential); select a child of a Sequential, or use apply/set",
                if path.is_empty() {
                    "<root>".to_string()
                } else {
                    path.join(".")
                },
                n.kind()
            )));
        }
        if n.children().iter().all(|(k, _)| k.parse::<usize>().is_ok()) {
            children = children
                .into_iter()
                .enumerate()
                .map(|(i, (_, c))| (i.to_string(), c))
                .collect();
        } else {
            dedupe_names(&mut children);
        }
    }
    Ok(n.clone().with_children(children))
}

/// A name for a child inserted into `parent`, after its kind; `taken` caches the parent's
/// names (built on first use).
fn fresh_name(
    parent: &Node,
    new: &Node,
    taken: &mut Option<std::collections::HashSet<String>>,
) -> String {
    let taken =
        taken.get_or_insert_with(|| parent.children().iter().map(|(k, _)| k.clone()).collect());
    unused_name(taken, new.kind().to_lowercase())
}

/// `base`, or `base_1`, `base_2`, ..., the first not in `taken` (a name for a new child).
pub fn unused_name(taken: &std::collections::HashSet<String>, base: String) -> String {
    if !taken.contains(&base) {
        return base;
    }
    (1..)
        .map(|i| format!("{base}_{i}"))
        .find(|s| !taken.contains(s))
        .unwrap_or(base)
}

fn dedupe_names(children: &mut [(String, Node)]) {
    let mut seen = std::collections::HashSet::new();
    // The next suffix to try per stem: renaming stays linear with thousands of clashes.
    let mut next: std::collections::HashMap<String, usize> = Default::default();
    for child in children.iter_mut() {
        if seen.contains(&child.0) {
            let stem = child
                .0
                .trim_end_matches(char::is_numeric)
                .trim_end_matches('_')
                .to_string();
            let k = next.entry(stem.clone()).or_insert(1);
            while seen.contains(&child.0) {
                child.0 = format!("{stem}_{k}");
                *k += 1;
            }
        }
        seen.insert(child.0.clone());
    }
}
