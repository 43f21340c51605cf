//! `[model]`: layer tables to a model tree.
//!
//! A layer table has `type = "<Kind>"` and the kind's config keys, plus reserved keys:
//! `layers = [...]` (ordered children `0, 1, ...`) or `children = { name = {...}, ... }` (named,
//! in order), the child slots of some kinds (`delta` for Residual; `input_to_query`,
//! `input_to_key`, `input_to_value`, `query_key_to_attn`, `attn_value_to_output` for
//! Attention), `params = { name = "label" }` (explicit labels: the same label twice shares one
//! parameter) and `repeat = N` (N copies as children `0..N-1` of a Sequential). Instead of
//! `type`, `builder = "mlp" | "transformer"` expands a builder with its arguments. Parameters
//! get the label `<path>.<name>` (e.g. `blocks.3.attention.query.weights`) unless given.

use super::decode::{check_keys, join, key_loc, opt_axes, opt_int, opt_str, table};
use super::raw::{RNode, RTable, RVal};
use super::source::{did_you_mean, Diagnostic, Loc};
use crate::combinators::SEQUENCE_KINDS;
use crate::error::Error;
use crate::layers::linear::affine;
use crate::layers::norms::{layer_norm, rms_layer_norm};
use crate::models::mlp::MlpConfig;
use crate::models::transformer::TransformerConfig;
use crate::tree::registry::{decode_config, known_kinds, make_layer};
use crate::tree::{Builder, Node};
use std::cell::RefCell;
use std::collections::BTreeMap;

const RESERVED: [&str; 7] = [
    "type", "builder", "repeat", "params", "children", "layers", "hf",
];
const ATTENTION_SLOTS: [&str; 5] = [
    "input_to_query",
    "input_to_key",
    "input_to_value",
    "query_key_to_attn",
    "attn_value_to_output",
];
/// Builders a layer table can name with `builder = "..."`.
pub const BUILDERS: [&str; 2] = ["mlp", "transformer"];

/// Kinds whose children are an ordered list.
fn is_branchy(kind: &str) -> bool {
    SEQUENCE_KINDS.contains(&kind)
        || matches!(
            kind,
            "NamedGroup" | "BranchAndAddTogether" | "BranchAndMultiplyTogether"
        )
}

fn slots_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "Residual" => &["delta"],
        "Attention" => &ATTENTION_SLOTS,
        _ => &[],
    }
}

/// Builds model trees from layer tables, remembering where each path was declared.
pub struct ModelBuilder<'a> {
    pub builder: &'a Builder,
    /// Tree path -> the location of the table that declared it.
    pub locs: RefCell<BTreeMap<String, Loc>>,
    /// The directory `hf = "..."` paths are relative to (the recipe's).
    pub base_dir: std::path::PathBuf,
}

fn with_key(path: &[String], k: &str) -> Vec<String> {
    let mut p = path.to_vec();
    p.push(k.to_string());
    p
}

/// The backquoted names after "expected" in a serde message (`expected one of `a`, `b``),
/// without the trailing "in `key`" that toml adds.
fn expected_names(message: &str) -> Vec<String> {
    let Some(tail) = message.split("expected ").nth(1) else {
        return vec![];
    };
    let tail = tail
        .split(" in `")
        .next()
        .unwrap_or(tail)
        .split("\nin `")
        .next()
        .unwrap_or(tail);
    tail.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, x)| x.to_string())
        .collect()
}

/// Maps a library error about a config (`ConfigField`) to a located diagnostic.
pub fn config_error(
    e: Error,
    t: &RTable,
    table_loc: Option<Loc>,
    key_path: &[String],
    allowed_extra: &[&str],
) -> Diagnostic {
    match e {
        Error::ConfigField { field, message } => {
            let segs: Vec<String> = field
                .split('.')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            // serde's unknown-field message names the key and the expected ones.
            if let Some(rest) = message.split("unknown field `").nth(1) {
                let key = rest.split('`').next().unwrap_or("").to_string();
                let expected = expected_names(&message);
                let mut all: Vec<&str> = expected.iter().map(|s| s.as_str()).collect();
                all.extend(allowed_extra.iter().copied());
                let mut inner = segs.clone();
                if inner.last() != Some(&key) {
                    inner.push(key.clone());
                }
                let node = RNode {
                    val: RVal::Table(t.clone()),
                    loc: table_loc.clone(),
                };
                let loc = node.loc_of(&inner).or(table_loc);
                let what = message.split(':').next().unwrap_or("layer");
                let mut d = Diagnostic::new(format!("unknown key `{key}` in {what}"))
                    .at(loc)
                    .key(join(&[key_path, &inner[..]].concat()));
                if let Some(s) = did_you_mean(&key, all.iter().copied()) {
                    d = d.label(format!("did you mean `{s}`?"));
                }
                return d.note(format!("expected one of: {}", all.join(", ")));
            }
            let node = RNode {
                val: RVal::Table(t.clone()),
                loc: table_loc.clone(),
            };
            if let Some(rest) = message.split("unknown variant `").nth(1) {
                let word = rest.split('`').next().unwrap_or("").to_string();
                let expected = expected_names(&message);
                let vloc = node.lookup(&segs).and_then(|n| n.loc.clone()).or(table_loc);
                let what = message.split(':').next().unwrap_or("config");
                let field = segs.last().cloned().unwrap_or_default();
                let mut d =
                    Diagnostic::new(format!("{what}: unknown value `{word}` for `{field}`"))
                        .at(vloc)
                        .key(join(&[key_path, &segs[..]].concat()));
                if let Some(s) = did_you_mean(&word, expected.iter().map(|s| s.as_str())) {
                    d = d.label(format!("did you mean `{s}`?"));
                }
                return d.note(format!("expected one of: {}", expected.join(", ")));
            }
            // Point at the value (which may come from a `--set`), else at its key.
            let loc = if segs.is_empty() {
                table_loc
            } else {
                node.lookup(&segs)
                    .and_then(|n| n.loc.clone())
                    .or_else(|| node.loc_of(&segs))
                    .or(table_loc)
            };
            Diagnostic::new(message.trim().to_string())
                .at(loc)
                .key(join(&[key_path, &segs[..]].concat()))
        }
        other => Diagnostic::new(other.to_string())
            .at(table_loc)
            .key(join(key_path)),
    }
}

fn config_table(t: &RTable, skip: &[&str]) -> toml::Table {
    t.iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, e)| (k.clone(), e.node.to_toml()))
        .collect()
}

impl<'a> ModelBuilder<'a> {
    /// A builder of trees whose parameters come from `builder`.
    pub fn new(builder: &'a Builder) -> Self {
        ModelBuilder {
            builder,
            locs: RefCell::new(BTreeMap::new()),
            base_dir: std::path::PathBuf::new(),
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
        if let Some(dir) = opt_str(t, "hf", key_path)? {
            check_keys(
                t,
                &["hf"],
                key_path,
                "a pretrained model table (`hf = \"dir\"` stands alone)",
            )?;
            let dir = self.base_dir.join(&dir);
            let at = key_loc(t, "hf");
            let err = |e: Error| {
                Diagnostic::new(e.to_string())
                    .at(at.clone())
                    .key(join(&with_key(key_path, "hf")))
            };
            if !dir.join("config.json").is_file() {
                return Err(err(Error::Config(format!(
                    "`{}` is not a HuggingFace model directory (no config.json)",
                    dir.display()
                ))));
            }
            return if self.builder.seed.is_some() {
                crate::models::hf::load(&dir, Some(self.builder.kind), self.builder.device)
                    .map(|m| m.tree)
                    .map_err(err)
            } else {
                let cp = dir.join("config.json");
                let text = std::fs::read_to_string(&cp)
                    .map_err(|e| err(Error::Config(format!("{}: {e}", cp.display()))))?;
                crate::models::hf::parse(&text, &cp.display().to_string())
                    .and_then(|a| a.build(self.builder))
                    .map_err(err)
            };
        }
        if let Some(n) = opt_int(t, "repeat", key_path)? {
            if n < 1 {
                return Err(
                    Diagnostic::new(format!("`repeat` must be at least 1, got {n}"))
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
            return Ok(crate::combinators::Sequential::named(children));
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
        let kind = match opt_str(t, "type", key_path)? {
            Some(k) => k,
            None => {
                return Err(Diagnostic::new(
                    "a layer table needs `type = \"<Kind>\"` (or `builder = \"...\"`)",
                )
                .at(node.loc.clone())
                .key(join(key_path))
                .note(format!("known kinds: {}", known_kinds().join(", "))))
            }
        };
        let kinds = known_kinds();
        if !kinds.contains(&kind) {
            let mut d = Diagnostic::new(format!("unknown layer kind `{kind}`"))
                .at(t.get("type").and_then(|e| e.node.loc.clone()))
                .key(join(&with_key(key_path, "type")));
            if let Some(s) = did_you_mean(&kind, kinds.iter().map(|s| s.as_str())) {
                d = d.label(format!("did you mean `{s}`?"));
            }
            return Err(d.note(format!("known kinds: {}", kinds.join(", "))));
        }
        let slots = slots_of(&kind);
        let has_children = t.contains_key("children") || t.contains_key("layers");
        // Composite kinds declared by their arguments expand through their builders.
        if !has_children && matches!(kind.as_str(), "Affine" | "LayerNorm" | "RMSLayerNorm") {
            return self.build_composite(&kind, t, node.loc.clone(), path, key_path);
        }
        let mut skip: Vec<&str> = RESERVED.to_vec();
        skip.extend(slots.iter());
        let cfg = config_table(t, &skip);
        let layer = make_layer(&kind, &cfg).map_err(|e| {
            let mut extra: Vec<&str> = RESERVED.iter().copied().filter(|k| *k != "hf").collect();
            extra.extend(slots.iter());
            config_error(e, t, node.loc.clone(), key_path, &extra)
        })?;
        // Explicit labels.
        let mut labels = BTreeMap::new();
        if let Some(e) = t.get("params") {
            let pt = table(&e.node, &with_key(key_path, "params"), "`params`")?;
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
                    .key(join(&with_key(&with_key(key_path, "params"), pname))));
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
                        .key(join(&with_key(&with_key(key_path, "params"), pname))))
                    }
                }
            }
        }
        let scope = self.builder.scope(&path.join("."));
        let mut out = Node::build_arc(layer, &scope, &labels).map_err(|e| {
            Diagnostic::new(e.to_string())
                .at(node.loc.clone())
                .key(join(key_path))
        })?;
        // Children.
        let mut children: Vec<(String, Node)> = vec![];
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
                if children.iter().any(|(n, _)| n == name) {
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
                if children.iter().any(|(n, _)| n == slot) {
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
        // Structural checks.
        if !slots.is_empty() {
            for slot in slots {
                if !children.iter().any(|(n, _)| n == slot) {
                    return Err(
                        Diagnostic::new(format!("`{kind}` needs its child `{slot}`"))
                            .at(node.loc.clone())
                            .key(join(key_path))
                            .note(format!("{kind} children: {}", slots.join(", "))),
                    );
                }
            }
        } else if !has_children && is_branchy(&kind) && !t.contains_key("layers") {
            // An empty sequence is allowed (identity), an empty branch is not.
            if kind.starts_with("Branch") {
                return Err(Diagnostic::new(format!(
                    "`{kind}` needs at least one branch in `layers`"
                ))
                .at(node.loc.clone())
                .key(join(key_path)));
            }
        }
        if has_children && slots.is_empty() && !is_branchy(&kind) && !custom_allows_children(&kind)
        {
            return Err(Diagnostic::new(format!("`{kind}` takes no children"))
                .at(key_loc(t, "children").or(key_loc(t, "layers")))
                .key(join(key_path)));
        }
        out = out.with_children(children);
        Ok(out)
    }

    fn build_composite(
        &self,
        kind: &str,
        t: &RTable,
        loc: Option<Loc>,
        path: &[String],
        key_path: &[String],
    ) -> Result<Node, Diagnostic> {
        let scope = self.builder.scope(&path.join("."));
        let wrap = |e: Error| {
            Diagnostic::new(e.to_string())
                .at(loc.clone())
                .key(join(key_path))
        };
        match kind {
            "Affine" => {
                check_keys(
                    t,
                    &["type", "input_axes", "output_axes"],
                    key_path,
                    "an `Affine` layer",
                )?;
                let i = opt_axes(t, "input_axes", key_path)?
                    .ok_or_else(|| missing(t, &loc, key_path, "input_axes", "Affine"))?;
                let o = opt_axes(t, "output_axes", key_path)?
                    .ok_or_else(|| missing(t, &loc, key_path, "output_axes", "Affine"))?;
                affine(&scope, i, o).map_err(wrap)
            }
            _ => {
                check_keys(
                    t,
                    &["type", "axes", "epsilon"],
                    key_path,
                    &format!("a `{kind}` layer"),
                )?;
                let axes = opt_axes(t, "axes", key_path)?
                    .ok_or_else(|| missing(t, &loc, key_path, "axes", kind))?;
                let eps = match t.get("epsilon").map(|e| &e.node.val) {
                    None => 1e-6,
                    Some(RVal::Float(f)) => *f,
                    Some(RVal::Int(i)) => *i as f64,
                    Some(_) => {
                        return Err(Diagnostic::new("`epsilon` must be a number")
                            .at(key_loc(t, "epsilon"))
                            .key(join(&with_key(key_path, "epsilon"))))
                    }
                };
                if kind == "LayerNorm" {
                    layer_norm(&scope, axes, eps)
                } else {
                    rms_layer_norm(&scope, axes, eps)
                }
                .map_err(wrap)
            }
        }
    }

    fn build_builder(
        &self,
        name: &str,
        t: &RTable,
        loc: Option<Loc>,
        path: &[String],
        key_path: &[String],
    ) -> Result<Node, Diagnostic> {
        let scope = self.builder.scope(&path.join("."));
        let cfg = config_table(t, &["builder"]);
        let res = match name {
            "mlp" => {
                decode_config::<MlpConfig>("the `mlp` builder", &cfg).and_then(|c| c.build(&scope))
            }
            "transformer" => decode_config::<TransformerConfig>("the `transformer` builder", &cfg)
                .and_then(|c| c.build(&scope)),
            other => {
                let mut d = Diagnostic::new(format!("unknown builder `{other}`"))
                    .at(t.get("builder").and_then(|e| e.node.loc.clone()))
                    .key(join(&with_key(key_path, "builder")));
                if let Some(s) = did_you_mean(other, BUILDERS.iter().copied()) {
                    d = d.label(format!("did you mean `{s}`?"));
                }
                return Err(d.note(format!("known builders: {}", BUILDERS.join(", "))));
            }
        };
        res.map_err(|e| config_error(e, t, loc, key_path, &["builder"]))
    }
}

fn custom_allows_children(kind: &str) -> bool {
    // Kinds registered from Rust may take children through `children`; built-in leaf kinds do
    // not.
    !matches!(
        kind,
        "Linear"
            | "AddBias"
            | "Elementwise"
            | "Softmax"
            | "TanhSoftCap"
            | "RenameAxes"
            | "CastToDType"
            | "Identity"
            | "Rescale"
            | "Dropout"
            | "ContractTogether"
            | "SaveIntermediate"
            | "Standardize"
            | "RMSStandardize"
            | "EmbeddingLookup"
            | "EmbeddingDecode"
            | "ApplyRoPE"
            | "ApplyCausalAttentionMask"
            | "ApplyCausalSlidingWindowAttentionMask"
            | "ApplyExplicitAttentionMask"
    )
}

fn missing(
    t: &RTable,
    loc: &Option<Loc>,
    key_path: &[String],
    key: &str,
    kind: &str,
) -> Diagnostic {
    let _ = t;
    Diagnostic::new(format!("`{kind}` is missing `{key}`"))
        .at(loc.clone())
        .key(join(&with_key(key_path, key)))
}
