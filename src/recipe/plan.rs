//! The planner: recipe -> model tree (+ patches) -> shape inference on the meta device ->
//! parameter counts and a training-memory estimate ([`crate::assembly::memory`]), with a shape
//! error put at the recipe table that declared the failing layer.
//!
//! Planning with [`Builder::slots`] allocates no parameter storage at all: parameters are
//! slots (shapes only). The optimizer state counted per trainable element is what `[optim]`
//! keeps: two moments for AdamW, the default; one buffer for SGD with momentum; none for plain
//! SGD.

use super::model::ModelBuilder;
use super::patch::apply_patches;
use super::source::Diagnostic;
use super::{recipe_error, Recipe};
use crate::assembly::{memory, ModelSpec};
use crate::base::{Error, Result};
use crate::spec::InputSpec;
use crate::tree::{Builder, Node, Registry};

pub use crate::assembly::memory::{count_params, Counts, Memory};

/// A planned recipe.
#[derive(Debug, Clone)]
pub struct Plan {
    pub recipe: Recipe,
    pub tree: Node,
    /// Output named shape and dtype from shape inference (None without `[model.input]`).
    pub output: Option<(Vec<(String, i64)>, tch::Kind)>,
    pub counts: Counts,
    pub memory: Memory,
    /// The processes of the data-parallel run the plan is for (1: one process).
    pub world_size: usize,
}

impl Plan {
    /// Plans a recipe with shapes only (no parameter storage).
    pub fn shapes_only(recipe: Recipe, registry: &Registry) -> Result<Plan> {
        let b = Builder::slots().dtype(recipe.param_dtype);
        Self::build(recipe, registry, &b)
    }

    /// Builds the tree and applies the patches, without shape inference (for `pzt show` and
    /// `pzt select`).
    pub fn tree_only(recipe: &Recipe, registry: &Registry) -> Result<Node> {
        let b = Builder::slots().dtype(recipe.param_dtype);
        let (tree, _) = build_tree(recipe, registry, &b)?;
        Ok(tree)
    }

    /// Plans a recipe building parameters with `builder` (slots or real values).
    pub fn build(recipe: Recipe, registry: &Registry, builder: &Builder) -> Result<Plan> {
        let sources = recipe.resolved.sources.clone();
        let fail = |d: Diagnostic| recipe_error(&sources, d);
        let (tree, mb_locs) = build_tree(&recipe, registry, builder)?;
        let counts = count_params(&tree);
        let mut activations = 0;
        let mut output = None;
        if let Some(input) = &recipe.input {
            match memory::activations(&tree, input) {
                Ok((o, bytes)) => {
                    activations = loss_activations(&recipe, &tree, input, bytes, &o)?;
                    output = Some(o);
                }
                Err(e) => return Err(fail(shape_error(&tree, &mb_locs, input, &e))),
            }
        }
        // Without `[optim]`, AdamW (the default optimizer): two float32 moments.
        let optimizer = recipe
            .optim
            .as_ref()
            .map_or(8, |o| o.state_bytes_per_value());
        let mut memory = memory::memory(&tree, activations, builder.kind, optimizer);
        if recipe.objective.is_preference() {
            // Two sequences per pair (chosen and rejected, or a KTO row and its mismatched
            // one); the reference's forward keeps nothing.
            memory.activations *= 2;
            memory.reference = reference_bytes(&recipe, &tree, &counts, builder.kind);
        }
        Ok(Plan {
            recipe,
            tree,
            output,
            counts,
            memory,
            world_size: 1,
        })
    }
}

/// The activations of a training step with a language model's loss (`whole`: the model's
/// own, from [`memory::activations`]). The loss over the whole logits adds three float32
/// tensors of the logits' size (the log-softmax, kept for backward, and the two gradients of
/// its backward). The chunked loss ([`crate::train::head`]) keeps the trunk's activations and,
/// one chunk at a time, three tensors of `[chunk, vocab]` at most: the chunk's log-softmax and
/// the two gradients of its backward (whose kernel is fused, with no temporary of that size);
/// the chunk's logits are freed once their log-softmax is taken (a head with adapters makes
/// its base and adapter outputs and their sum, three again, then frees the two).
fn loss_activations(
    recipe: &Recipe,
    tree: &Node,
    input: &InputSpec,
    whole: i64,
    output: &memory::Output,
) -> Result<i64> {
    let (Some(data), Some(train)) = (&recipe.data, &recipe.train) else {
        return Ok(whole);
    };
    let tokens: i64 = input.axes.iter().map(|(_, n)| *n).product();
    let values: i64 = output.0.iter().map(|(_, n)| *n).product();
    if !data.is_lm() || tokens <= 0 || values % tokens != 0 {
        return Ok(whole);
    }
    let vocab = values / tokens;
    let chunk = train.loss_chunk(vocab.max(1) as usize) as i64;
    match crate::models::token_head::split(tree) {
        Some(s) if tokens > chunk => {
            let trunk =
                crate::layers::grouping::Sequential::named(tree.children()[..s.trunk].to_vec());
            let (_, kept) = memory::activations(&trunk, input)?;
            Ok(kept + 3 * chunk * vocab * 4)
        }
        _ => Ok(whole + 3 * values * 4),
    }
}

/// A shape-inference failure at the place in the recipe that declared the failing layer.
fn shape_error(
    tree: &Node,
    locs: &std::collections::BTreeMap<String, super::source::Loc>,
    input: &InputSpec,
    e: &Error,
) -> Diagnostic {
    let path = e.layer_path().unwrap_or_default();
    let mut segs: Vec<&str> = if path == "<root>" {
        vec![]
    } else {
        path.split('.').collect()
    };
    let loc = loop {
        if let Some(l) = locs.get(&segs.join(".")) {
            break Some(l.clone());
        }
        if segs.pop().is_none() {
            break None;
        }
    };
    let kind = if path == "<root>" {
        Some(tree.kind().to_string())
    } else {
        tree.get(&path.split('.').map(String::from).collect::<Vec<_>>())
            .ok()
            .map(|n| n.kind().to_string())
    };
    Diagnostic::new(format!(
        "shape check failed at layer `{path}`{}: {}",
        kind.map(|k| format!(" ({k})")).unwrap_or_default(),
        e.root_cause()
    ))
    .at(loc)
    .note(format!(
        "the model input is {}",
        super::report::describe_input(input)
    ))
}

/// Builds the `[model]` tree and applies the patches; returns it with the declaration place of
/// each tree path.
pub(crate) fn build_tree(
    recipe: &Recipe,
    registry: &Registry,
    builder: &Builder,
) -> Result<(Node, std::collections::BTreeMap<String, super::source::Loc>)> {
    build_tree_in(recipe, registry, builder, &[])
}

/// [`build_tree`] for the model of a checkpoint that `chain` reached.
pub(crate) fn build_tree_in(
    recipe: &Recipe,
    registry: &Registry,
    builder: &Builder,
    chain: &[std::path::PathBuf],
) -> Result<(Node, std::collections::BTreeMap<String, super::source::Loc>)> {
    build_parts(recipe, registry, builder, chain, true)
}

/// The layer tables alone (a [`ModelSpec`]'s source: its patches and strategy are rewrites).
fn build_tables(
    recipe: &Recipe,
    registry: &Registry,
    builder: &Builder,
    chain: &[std::path::PathBuf],
) -> Result<(Node, std::collections::BTreeMap<String, super::source::Loc>)> {
    build_parts(recipe, registry, builder, chain, false)
}

/// The layer tables, and the patches and the `[strategy]` when `rest` (the planner's tree,
/// with every error located in the recipe).
fn build_parts(
    recipe: &Recipe,
    registry: &Registry,
    builder: &Builder,
    chain: &[std::path::PathBuf],
    rest: bool,
) -> Result<(Node, std::collections::BTreeMap<String, super::source::Loc>)> {
    let sources = &recipe.resolved.sources;
    if !recipe.has_model {
        return Err(recipe_error(
            sources,
            super::sections::no_model(&recipe.resolved),
        ));
    }
    let mut mb = ModelBuilder::new(builder, registry);
    mb.chain = chain.to_vec();
    mb.base_dir = recipe
        .resolved
        .path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let tree = mb
        .build(&recipe.model, &[], &["model".to_string()])
        .map_err(|d| recipe_error(sources, d))?;
    let tree = match rest {
        true => apply_patches(tree, &recipe.patches, &mb).map_err(|d| recipe_error(sources, d))?,
        false => tree,
    };
    let tree = match rest {
        true => super::strategy::apply_strategy(tree, recipe, mb.builder)
            .map_err(|d| recipe_error(sources, d))?,
        false => tree,
    };
    Ok((tree, mb.locs.into_inner()))
}

/// The recipe's model as a [`ModelSpec`]: the source its `[model]` table names (a Hugging
/// Face directory, a checkpoint continued, or its layer tables), then its patches and its
/// `[strategy]` as rewrites.
pub fn model_spec(recipe: &Recipe, registry: &Registry) -> Result<ModelSpec> {
    model_spec_in(recipe, registry, &[])
}

/// [`model_spec`] for a recipe reached through the checkpoints `chain`.
fn model_spec_in(
    recipe: &Recipe,
    registry: &Registry,
    chain: &[std::path::PathBuf],
) -> Result<ModelSpec> {
    let fail = |d: Diagnostic| recipe_error(&recipe.resolved.sources, d);
    let mut spec = match source_of(recipe)? {
        Some(Named::Hf(dir)) => ModelSpec::hf(dir),
        Some(Named::Checkpoint(dir)) => {
            let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
            if chain.contains(&canonical) || chain.len() >= 16 {
                return Err(Error::Config(format!(
                    "`{}`: the chain of `checkpoint = ...` loops or is too long",
                    dir.display()
                )));
            }
            let mut inner_chain = chain.to_vec();
            inner_chain.push(canonical);
            let inner = Recipe::load(&dir.join("recipe.toml"), &[])?;
            ModelSpec::checkpoint(&dir, model_spec_in(&inner, registry, &inner_chain)?)
        }
        None => {
            let (r, reg, chain) = (recipe.clone(), registry.clone(), chain.to_vec());
            ModelSpec::layers(move |b| Ok(build_tables(&r, &reg, b, &chain)?.0))
        }
    };
    let (patches, layers) = super::patch::patch_rewrites(recipe, registry, chain).map_err(fail)?;
    spec.rewrites = patches;
    spec.layers = layers;
    spec.rewrites
        .extend(super::strategy::strategy_rewrites(recipe).map_err(fail)?);
    spec.pretrained = recipe.hf_dir();
    Ok(spec)
}

/// The model `[objective] reference = "path"` names (None for the other references): a pzt
/// checkpoint (its recipe's model with the checkpoint's values) or a Hugging Face directory,
/// relative to the recipe.
pub fn reference_spec(recipe: &Recipe, registry: &Registry) -> Result<Option<ModelSpec>> {
    let crate::spec::Reference::Path(p) = &recipe.objective.reference else {
        return Ok(None);
    };
    if !recipe.objective.needs_reference() {
        return Ok(None);
    }
    let dir = recipe.base_dir().join(p);
    let bad = |why: &str| Error::ConfigField {
        field: "reference".into(),
        message: format!("[objective]: reference = {p:?}: `{}` {why}", dir.display()),
    };
    if dir.join("state.json").is_file() && dir.join("recipe.toml").is_file() {
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        let inner = Recipe::load(&dir.join("recipe.toml"), &[])?;
        let base = model_spec_in(&inner, registry, &[canonical])?;
        return Ok(Some(ModelSpec::checkpoint(&dir, base)));
    }
    if dir.join("config.json").is_file() {
        return Ok(Some(ModelSpec::hf(dir)));
    }
    Err(bad("is neither a pzt checkpoint (state.json, recipe.toml) nor a Hugging Face model directory (config.json)")
        .in_section("objective"))
}

/// What the reference of a preference objective holds in memory while training: nothing for
/// the adapters off (zero-initialized LoRA adapters, or `"base"`) or precomputed log-probabilities;
/// a frozen copy of the trained parameters for `"initial"` otherwise; a model of the same size
/// for a path.
fn reference_bytes(
    recipe: &Recipe,
    tree: &crate::tree::Node,
    counts: &memory::Counts,
    kind: tch::Kind,
) -> i64 {
    use crate::spec::{Reference, StrategyKind};
    let o = &recipe.objective;
    if !o.needs_reference() || o.precompute_reference {
        return 0;
    }
    let s = &recipe.strategy;
    let lora = s.kind == StrategyKind::Lora;
    let fresh_adapters = s
        .lora
        .as_ref()
        .is_none_or(|l| l.init_from.is_none() && l.dora != Some(true))
        && s.trainable.is_none();
    match &o.reference {
        Reference::Base => 0,
        Reference::Initial if lora && fresh_adapters => 0,
        Reference::Initial => counts.trainable * kind.elt_size_in_bytes() as i64,
        Reference::Path(_) => memory::param_bytes(tree),
    }
}

/// A model the `[model]` table names on its own.
enum Named {
    Hf(std::path::PathBuf),
    Checkpoint(std::path::PathBuf),
}

/// What `[model]` names when it is `hf = "dir"` or `checkpoint = "dir"` alone (None for layer
/// tables).
fn source_of(recipe: &Recipe) -> Result<Option<Named>> {
    use super::raw::RVal;
    let Some(t) = recipe.model.as_table() else {
        return Ok(None);
    };
    if t.len() != 1 {
        return Ok(None);
    }
    let dir = |v: &RVal| match v {
        RVal::Str(s) => Some(recipe.base_dir().join(s)),
        _ => None,
    };
    Ok(match t.iter().next() {
        Some((k, e)) if k == "hf" => dir(&e.node.val).map(Named::Hf),
        Some((k, e)) if k == "checkpoint" => dir(&e.node.val).map(Named::Checkpoint),
        _ => None,
    })
}
