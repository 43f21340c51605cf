//! `[model]`: layer tables to a model tree.
//!
//! A layer table has `type = "<Kind>"` and the kind's config keys, plus reserved keys:
//! `layers = [...]` (ordered children `0, 1, ...`) or `children = { name = {...}, ... }` (named,
//! in order), the child slots of some kinds (`delta` for Residual; `input_to_query`,
//! `input_to_key`, `input_to_value`, `query_key_to_attn`, `attn_value_to_output` for
//! Attention), `params = { name = "label" }` (explicit labels: the same label twice shares one
//! parameter) and `repeat = N` (N copies as children `0..N-1` of a Sequential). Instead of
//! `type`, `builder = "<name>"` expands a builder of the registry with its arguments. Parameters
//! get the label `<path>.<name>` (e.g. `blocks.3.attention.query.weights`) unless given.
//!
//! What children a kind takes ([`ChildLayout`]), how a kind is declared by its arguments and
//! which builders exist are answered by the layer and the [`Registry`], never by lists here.

use super::decode::{check_keys, join, key_loc, opt_int, opt_str, table};
use super::diagnose::config_error;
use super::raw::{RNode, RTable, RVal};
use super::source::{did_you_mean, Diagnostic, Loc};
use crate::base::Error;
use crate::layers::grouping::Sequential;
use crate::tree::{Builder, ChildLayout, Node, Registry};
use std::cell::RefCell;
use std::collections::BTreeMap;

const RESERVED: [&str; 8] = [
    "type",
    "builder",
    "repeat",
    "params",
    "children",
    "layers",
    "hf",
    "checkpoint",
];

/// Builds model trees from layer tables, remembering where each path was declared.
pub struct ModelBuilder<'a> {
    pub builder: &'a Builder,
    pub registry: &'a Registry,
    /// Tree path -> the location of the table that declared it.
    pub locs: RefCell<BTreeMap<String, Loc>>,
    /// The directory `hf = "..."` paths are relative to (the recipe's).
    pub base_dir: std::path::PathBuf,
    /// The checkpoints whose models are being built around this one (`checkpoint = ...`
    /// chains), outermost first: a chain that comes back to one of them loops.
    pub chain: Vec<std::path::PathBuf>,
}

/// The most copies one `repeat` makes.
const MAX_REPEAT: i64 = 100_000;
/// The most layers (tree nodes) a recipe's model may have: a 400-layer model has ~10,000.
const MAX_NODES: usize = 1_000_000;

pub(super) fn with_key(path: &[String], k: &str) -> Vec<String> {
    let mut p = path.to_vec();
    p.push(k.to_string());
    p
}

fn config_table(t: &RTable, skip: &[&str]) -> toml::Table {
    t.iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, e)| (k.clone(), e.node.to_toml()))
        .collect()
}

/// "a `Kind` layer" / "an `Affine` layer".
fn a_layer(kind: &str) -> String {
    let article = if kind.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    };
    format!("{article} `{kind}` layer")
}

impl<'a> ModelBuilder<'a> {
    /// A builder of trees whose parameters come from `builder` and whose kinds and builders
    /// come from `registry`.
    pub fn new(builder: &'a Builder, registry: &'a Registry) -> Self {
        ModelBuilder {
            builder,
            registry,
            locs: RefCell::new(BTreeMap::new()),
            base_dir: std::path::PathBuf::new(),
            chain: vec![],
        }
    }

    /// Builds the layer table `node` at tree path `path`; `key_path` is where it sits in the
    /// recipe (for messages).
    pub fn build(
        &self,
        node: &RNode,
        path: &[String],
        key_path: &[String],
    ) -> Result<Node, Diagnostic> {
        let t = table(node, key_path, "a layer")?;
        if let Some(l) = &node.loc {
            self.locs.borrow_mut().insert(path.join("."), l.clone());
        }
        if self.locs.borrow().len() > MAX_NODES {
            return Err(Diagnostic::new(format!(
                "the model has more than {MAX_NODES} layers; pzt accepts at most that many"
            ))
            .at(node.loc.clone()));
        }
        if let Some(dir) = opt_str(t, "hf", key_path)? {
            return self.build_hf(&dir, t, key_path);
        }
        if let Some(dir) = opt_str(t, "checkpoint", key_path)? {
            return super::from_checkpoint::build(self, &dir, t, key_path);
        }
        if let Some(n) = opt_int(t, "repeat", key_path)? {
            return self.build_repeat(n, node, t, path, key_path);
        }
        if let Some(b) = opt_str(t, "builder", key_path)? {
            if t.contains_key("type") {
                return Err(Diagnostic::new(
                    "a layer table has either `type` or `builder`, not both",
                )
                .at(key_loc(t, "builder"))
                .key(join(key_path)));
            }
            return self.build_builder(&b, t, node.loc.clone(), path, key_path);
        }
        let kind = self.kind_of(node, t, key_path)?;
        self.build_kind(&kind, node, t, path, key_path)
    }

    /// A layer table of `type = kind`.
    fn build_kind(
        &self,
        kind: &str,
        node: &RNode,
        t: &RTable,
        path: &[String],
        key_path: &[String],
    ) -> Result<Node, Diagnostic> {
        let has_children = t.contains_key("children") || t.contains_key("layers");
        // Kinds declared by their arguments expand through their constructors.
        if let (false, Some(c)) = (has_children, self.registry.by_args(kind)) {
            let mut allowed = vec!["type"];
            allowed.extend(c.args.iter().map(|a| a.as_str()));
            check_keys(t, &allowed, key_path, &a_layer(kind))?;
            let scope = self.builder.scope(&path.join("."));
            return (c.build)(&config_table(t, &["type"]), &scope)
                .map_err(|e| config_error(e, t, node.loc.clone(), key_path, &[]));
        }
        let slots: &[&str] = match self.layout_of(kind, t) {
            Some(ChildLayout::Slots { names, .. }) => names,
            _ => &[],
        };
        let mut skip: Vec<&str> = RESERVED.to_vec();
        skip.extend(slots.iter());
        let cfg = config_table(t, &skip);
        let layer = self.registry.make_layer(kind, &cfg).map_err(|e| {
            let mut extra: Vec<&str> = RESERVED
                .iter()
                .copied()
                .filter(|k| *k != "hf" && *k != "checkpoint")
                .collect();
            extra.extend(slots.iter());
            config_error(e, t, node.loc.clone(), key_path, &extra)
        })?;
        let layout = layer.child_layout();
        let slots: &[&str] = match layout {
            ChildLayout::Slots { names, .. } => names,
            _ => &[],
        };
        let labels = self.explicit_labels(t, kind, &*layer, key_path)?;
        let scope = self.builder.scope(&path.join("."));
        let out = Node::build_arc(layer, &scope, &labels).map_err(|e| {
            Diagnostic::new(e.to_string())
                .at(node.loc.clone())
                .key(join(key_path))
        })?;
        let children = self.children(t, slots, path, key_path)?;
        check_children(kind, layout, &children, has_children, node, t, key_path)?;
        Ok(out.with_children(children))
    }

    /// The `type` of a layer table, a kind the registry knows.
    fn kind_of(&self, node: &RNode, t: &RTable, key_path: &[String]) -> Result<String, Diagnostic> {
        let kinds = self.registry.known_kinds();
        let kind = match opt_str(t, "type", key_path)? {
            Some(k) => k,
            None => {
                return Err(Diagnostic::new(
                    "a layer table needs `type = \"<Kind>\"` (or `builder = \"...\"`)",
                )
                .at(node.loc.clone())
                .key(join(key_path))
                .note(format!("known kinds: {}", kinds.join(", "))))
            }
        };
        if !self.registry.has_kind(&kind) {
            let mut d = Diagnostic::new(format!("unknown layer kind `{kind}`"))
                .at(t.get("type").and_then(|e| e.node.loc.clone()))
                .key(join(&with_key(key_path, "type")));
            if let Some(s) = did_you_mean(&kind, kinds.iter().map(|s| s.as_str())) {
                d = d.label(format!("did you mean `{s}`?"));
            }
            return Err(d.note(format!("known kinds: {}", kinds.join(", "))));
        }
        Ok(kind)
    }

    /// The child layout of `kind` declared by the table `t`, if the layer can be made from it.
    /// Which keys are child slots is the layer's to say, so it is made once without the keys
    /// that hold layer tables (its slots are then no config keys).
    pub fn layout_of(&self, kind: &str, t: &RTable) -> Option<ChildLayout> {
        let declares_layer = |n: &RNode| {
            n.as_table().is_some_and(|t| {
                ["type", "builder", "hf", "checkpoint", "repeat"]
                    .iter()
                    .any(|k| t.contains_key(*k))
            })
        };
        let cfg: toml::Table = t
            .iter()
            .filter(|(k, e)| !RESERVED.contains(&k.as_str()) && !declares_layer(&e.node))
            .map(|(k, e)| (k.clone(), e.node.to_toml()))
            .collect();
        // A bad config key must not hide the slots (and get them reported as unknown keys):
        // a kind whose config is bad is asked again with its defaults.
        self.registry
            .make_layer(kind, &cfg)
            .or_else(|_| self.registry.make_layer(kind, &toml::Table::new()))
            .ok()
            .map(|l| l.child_layout())
    }

    /// `hf = "dir"`: a pretrained model (values when the builder has a seed, slots otherwise).
    fn build_hf(&self, dir: &str, t: &RTable, key_path: &[String]) -> Result<Node, Diagnostic> {
        check_keys(
            t,
            &["hf"],
            key_path,
            "a pretrained model table (`hf = \"dir\"` stands alone)",
        )?;
        let dir = self.base_dir.join(dir);
        let at = key_loc(t, "hf");
        let err = |e: Error| {
            Diagnostic::new(e.to_string())
                .at(at.clone())
                .key(join(&with_key(key_path, "hf")))
        };
        crate::assembly::hf_tree(&dir, self.builder).map_err(err)
    }

    /// `repeat = N`: N copies of the table as children `0..N-1` of a Sequential.
    fn build_repeat(
        &self,
        n: i64,
        node: &RNode,
        t: &RTable,
        path: &[String],
        key_path: &[String],
    ) -> Result<Node, Diagnostic> {
        if !(1..=MAX_REPEAT).contains(&n) {
            return Err(
                Diagnostic::new(format!("`repeat` must be 1 to {MAX_REPEAT}, got {n}"))
                    .at(key_loc(t, "repeat"))
                    .key(join(&with_key(key_path, "repeat"))),
            );
        }
        let mut one = t.clone();
        one.shift_remove("repeat");
        let one = RNode {
            val: RVal::Table(one),
            loc: node.loc.clone(),
        };
        let mut children = vec![];
        for i in 0..n {
            let p = with_key(path, &i.to_string());
            children.push((i.to_string(), self.build(&one, &p, key_path)?));
        }
        Ok(Sequential::named(children))
    }

    /// `params = { name = "label" }`.
    fn explicit_labels(
        &self,
        t: &RTable,
        kind: &str,
        layer: &dyn crate::tree::Layer,
        key_path: &[String],
    ) -> Result<BTreeMap<String, String>, Diagnostic> {
        let mut labels = BTreeMap::new();
        let Some(e) = t.get("params") else {
            return Ok(labels);
        };
        let kp = with_key(key_path, "params");
        let pt = table(&e.node, &kp, "`params`")?;
        let names: Vec<String> = layer.param_specs().iter().map(|s| s.name.clone()).collect();
        for (pname, pe) in pt {
            if !names.contains(pname) {
                return Err(Diagnostic::new(format!(
                    "`{kind}` has no parameter `{pname}` (it has: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
                .at(pe.key_loc.clone())
                .key(join(&with_key(&kp, pname))));
            }
            match &pe.node.val {
                RVal::Str(l) => {
                    labels.insert(pname.clone(), l.clone());
                }
                _ => {
                    return Err(Diagnostic::new(format!(
                        "a parameter label must be a string, found {}",
                        pe.node.type_name()
                    ))
                    .at(pe.node.loc.clone())
                    .key(join(&with_key(&kp, pname))))
                }
            }
        }
        Ok(labels)
    }

    /// The children declared by `layers`, `children` and the slot keys.
    fn children(
        &self,
        t: &RTable,
        slots: &[&str],
        path: &[String],
        key_path: &[String],
    ) -> Result<Vec<(String, Node)>, Diagnostic> {
        let mut children: Vec<(String, Node)> = vec![];
        // Names taken so far (a set: a layer may have tens of thousands of children).
        let mut taken = std::collections::HashSet::new();
        if let Some(e) = t.get("layers") {
            let kp = with_key(key_path, "layers");
            let items = match &e.node.val {
                RVal::Array(a) => a,
                _ => {
                    return Err(Diagnostic::new(format!(
                        "`layers` must be an array of layer tables, found {}",
                        e.node.type_name()
                    ))
                    .at(e.node.loc.clone())
                    .key(join(&kp)))
                }
            };
            for (i, item) in items.iter().enumerate() {
                let name = i.to_string();
                taken.insert(name.clone());
                children.push((
                    name.clone(),
                    self.build(item, &with_key(path, &name), &with_key(&kp, &name))?,
                ));
            }
        }
        if let Some(e) = t.get("children") {
            let kp = with_key(key_path, "children");
            let ct = table(&e.node, &kp, "`children`")?;
            for (name, ce) in ct {
                if name.is_empty() || name.contains('.') {
                    return Err(Diagnostic::new(format!(
                        "child name `{name}` must be non-empty and without dots"
                    ))
                    .at(ce.key_loc.clone())
                    .key(join(&kp)));
                }
                if !taken.insert(name.clone()) {
                    return Err(Diagnostic::new(format!("child `{name}` is declared twice"))
                        .at(ce.key_loc.clone())
                        .key(join(&kp)));
                }
                children.push((
                    name.clone(),
                    self.build(&ce.node, &with_key(path, name), &with_key(&kp, name))?,
                ));
            }
        }
        for slot in slots {
            if let Some(e) = t.get(*slot) {
                if !taken.insert(slot.to_string()) {
                    return Err(Diagnostic::new(format!("child `{slot}` is declared twice"))
                        .at(e.key_loc.clone())
                        .key(join(key_path)));
                }
                children.push((
                    slot.to_string(),
                    self.build(&e.node, &with_key(path, slot), &with_key(key_path, slot))?,
                ));
            }
        }
        Ok(children)
    }

    fn build_builder(
        &self,
        name: &str,
        t: &RTable,
        loc: Option<Loc>,
        path: &[String],
        key_path: &[String],
    ) -> Result<Node, Diagnostic> {
        let Some(build) = self.registry.builder(name) else {
            let known = self.registry.known_builders();
            let mut d = Diagnostic::new(format!("unknown builder `{name}`"))
                .at(t.get("builder").and_then(|e| e.node.loc.clone()))
                .key(join(&with_key(key_path, "builder")));
            if let Some(s) = did_you_mean(name, known.iter().map(|s| s.as_str())) {
                d = d.label(format!("did you mean `{s}`?"));
            }
            return Err(d.note(format!("known builders: {}", known.join(", "))));
        };
        let scope = self.builder.scope(&path.join("."));
        build(&config_table(t, &["builder"]), &scope)
            .map_err(|e| config_error(e, t, loc, key_path, &["builder"]))
    }
}

/// The children a layer of `kind` with this layout got: every slot filled, a branch not empty,
/// none for a leaf.
fn check_children(
    kind: &str,
    layout: ChildLayout,
    children: &[(String, Node)],
    has_children: bool,
    node: &RNode,
    t: &RTable,
    key_path: &[String],
) -> Result<(), Diagnostic> {
    match layout {
        ChildLayout::Slots { names, .. } => {
            for slot in names {
                if !children.iter().any(|(n, _)| n == slot) {
                    return Err(
                        Diagnostic::new(format!("`{kind}` needs its child `{slot}`"))
                            .at(node.loc.clone())
                            .key(join(key_path))
                            .note(format!("{kind} children: {}", names.join(", "))),
                    );
                }
            }
        }
        // An empty sequence is allowed (identity), an empty branch is not.
        ChildLayout::Sequence { min } if children.len() < min && !has_children => {
            return Err(
                Diagnostic::new(format!("`{kind}` needs at least one branch in `layers`"))
                    .at(node.loc.clone())
                    .key(join(key_path)),
            );
        }
        ChildLayout::Leaf if has_children => {
            return Err(Diagnostic::new(format!("`{kind}` takes no children"))
                .at(key_loc(t, "children").or(key_loc(t, "layers")))
                .key(join(key_path)));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn articles() {
        assert_eq!(super::a_layer("Affine"), "an `Affine` layer");
        assert_eq!(super::a_layer("RMSLayerNorm"), "a `RMSLayerNorm` layer");
    }
}
