//! The structural rewrites: replacing, wrapping, and inserting layers next to a selection.
//! The engine decides where each new layer goes and which parameters it makes fresh; what the
//! layer is comes from the context's [`MakeLayer`] (a recipe builds it from its `with` table,
//! a Rust program from a closure).
//!
//! Labels of parameters a new layer makes follow the tree path it is built for: `replace` and
//! `wrap` build at the selected path (a replacement that declares the same label and shape as
//! a parameter it replaces gets a fresh value for it); `insert` builds at `<path>_before` or
//! `<path>_after`.

use super::Problem;
use crate::base::Result;
use crate::tree::{Builder, Node, Selection};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Where a new layer goes: the tree path it is built for, and the subtree it wraps (`wrap`
/// alone).
pub struct Place<'a> {
    pub path: &'a [String],
    pub wrapped: Option<&'a Node>,
}

/// Makes the layers of structural rewrites: layer `layer` (the number the action names) for
/// `place`, its parameters made by `builder`. A `wrap` layer holds `place.wrapped` inside.
pub trait MakeLayer {
    fn make(&self, layer: usize, place: &Place<'_>, builder: &Builder) -> Result<Node>;
}

impl<F: Fn(usize, &Place<'_>, &Builder) -> Result<Node>> MakeLayer for F {
    fn make(&self, layer: usize, place: &Place<'_>, builder: &Builder) -> Result<Node> {
        self(layer, place, builder)
    }
}

fn labels_in(n: &Node) -> BTreeSet<String> {
    n.all_param_entries()
        .into_iter()
        .map(|(_, _, e)| e.label().to_string())
        .collect()
}

/// `replace`: one rewrite for all matches. Labels only a replaced subtree held are forgotten,
/// so that its replacement makes fresh parameters for them; a label also held outside the
/// matches, by a match still to come or by a replacement already built is kept (as replacing
/// one match after the other would).
pub(super) fn replace(
    selection: &Selection,
    layer: usize,
    make: &dyn MakeLayer,
    builder: &Builder,
) -> Result<Node, Problem> {
    let outside: HashSet<String> = selection
        .invert()
        .get()
        .iter()
        .flat_map(|(_, n)| labels_in(n))
        .collect();
    let mut remaining: HashMap<String, usize> = HashMap::new();
    for (_, n) in selection.get() {
        for l in labels_in(n) {
            *remaining.entry(l).or_default() += 1;
        }
    }
    let mut built: HashSet<String> = HashSet::new();
    let mut news: HashMap<Vec<String>, Node> = HashMap::new();
    for (path, (_, old)) in selection.path_segments().iter().zip(selection.get()) {
        let mine = labels_in(old);
        for l in &mine {
            if let Some(c) = remaining.get_mut(l) {
                *c -= 1;
            }
        }
        for l in mine {
            let held = outside.contains(&l)
                || built.contains(&l)
                || remaining.get(&l).is_some_and(|&c| c > 0);
            if !held {
                builder.forget(&l);
            }
        }
        let place = Place {
            path,
            wrapped: None,
        };
        let new = make.make(layer, &place, builder).map_err(Problem::Failed)?;
        built.extend(labels_in(&new));
        news.insert(path.clone(), new);
    }
    selection
        .apply(|path, old| Ok(news.remove(path).unwrap_or_else(|| old.clone())))
        .map_err(Problem::Failed)
}

/// `wrap`: each match inside a new layer built at its path.
pub(super) fn wrap(
    selection: &Selection,
    layer: usize,
    make: &dyn MakeLayer,
    builder: &Builder,
) -> Result<Node, Problem> {
    let mut news: HashMap<Vec<String>, Node> = HashMap::new();
    for (path, (_, old)) in selection.path_segments().iter().zip(selection.get()) {
        let place = Place {
            path,
            wrapped: Some(old),
        };
        let new = make.make(layer, &place, builder).map_err(Problem::Failed)?;
        news.insert(path.clone(), new);
    }
    selection
        .apply(|path, old| Ok(news.remove(path).unwrap_or_else(|| old.clone())))
        .map_err(Problem::Failed)
}

/// `insert`: a new layer before (or `after`) each match, named and built at `<path>_before`
/// (`<path>_after`).
pub(super) fn insert(
    selection: &Selection,
    layer: usize,
    after: bool,
    make: &dyn MakeLayer,
    builder: &Builder,
) -> Result<Node, Problem> {
    let suffix = if after { "_after" } else { "_before" };
    selection
        .insert_each(after, |path| {
            let mut at = path.to_vec();
            if let Some(last) = at.last_mut() {
                last.push_str(suffix);
            }
            let place = Place {
                path: &at,
                wrapped: None,
            };
            make.make(layer, &place, builder)
        })
        .map_err(Problem::Failed)
}
