//! [`ModelSpec`]: a model as data, a source and the rewrites applied to it, built by one
//! engine with any parameter [`Builder`] (shapes only, seeded values, a device and a dtype).

use super::{apply, Action, Context, MakeLayer, Place, Rewrite, Select};
use crate::base::{Error, Result};
use crate::params::ParamEntry;
use crate::tree::{Builder, Node, Registry};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Builds a tree with parameters from a builder.
pub type LayersFn = Arc<dyn Fn(&Builder) -> Result<Node> + Send + Sync>;

/// Makes the layer a replace, wrap or insert rewrite puts at a place.
pub type NewLayerFn = Arc<dyn Fn(&Place<'_>, &Builder) -> Result<Node> + Send + Sync>;

/// The layers a model's structural rewrites put in place (rewrite `Replace { layer: k }` uses
/// the `k`-th).
#[derive(Clone, Default)]
pub struct NewLayers(pub Vec<NewLayerFn>);

impl std::fmt::Debug for NewLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewLayers({})", self.0.len())
    }
}

impl MakeLayer for NewLayers {
    fn make(&self, layer: usize, place: &Place<'_>, builder: &Builder) -> Result<Node> {
        let f = self
            .0
            .get(layer)
            .ok_or_else(|| Error::Config(format!("no layer {layer} for a structural rewrite")))?;
        f(place, builder)
    }
}

/// Where a model comes from.
#[derive(Clone)]
pub enum Source {
    /// A pretrained Hugging Face model directory (`config.json`, weights): its values with a
    /// seeded builder, its shapes with a builder of slots.
    HfDir(PathBuf),
    /// A builder of the registry and its arguments (`transformer`, `mlp`, `decoder`).
    Builder { name: String, args: toml::Table },
    /// A tree made by a function: a recipe's layer tables and patches, or a program's own code.
    Layers(LayersFn),
    /// A pzt checkpoint continued as a new model: `base` (the checkpoint's own model) with the
    /// checkpoint's parameters, adapters merged and everything trainable again
    /// ([`super::checkpoint::continued`]).
    Checkpoint { dir: PathBuf, base: Box<ModelSpec> },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::HfDir(d) => write!(f, "HfDir({})", d.display()),
            Source::Builder { name, args } => write!(f, "Builder({name}, {args})"),
            Source::Layers(_) => write!(f, "Layers"),
            Source::Checkpoint { dir, base } => {
                write!(f, "Checkpoint({}, {:?})", dir.display(), base)
            }
        }
    }
}

/// A model: a source, then rewrites in order.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub source: Source,
    pub rewrites: Vec<Rewrite>,
    /// The Hugging Face directory a [`Source::Layers`] model loads, whose module names LoRA
    /// targets and PEFT adapters use (the other sources know theirs).
    pub pretrained: Option<PathBuf>,
    /// The layers of its replace, wrap and insert rewrites.
    pub layers: NewLayers,
}

impl ModelSpec {
    /// The model of a Hugging Face directory.
    pub fn hf(dir: impl Into<PathBuf>) -> ModelSpec {
        ModelSpec::from(Source::HfDir(dir.into()))
    }

    /// The model a registry builder makes from `args`.
    pub fn builder(name: &str, args: toml::Table) -> ModelSpec {
        ModelSpec::from(Source::Builder {
            name: name.into(),
            args,
        })
    }

    /// The model a function builds.
    pub fn layers(f: impl Fn(&Builder) -> Result<Node> + Send + Sync + 'static) -> ModelSpec {
        ModelSpec::from(Source::Layers(Arc::new(f)))
    }

    /// Checkpoint `dir` of a run whose model is `base`, continued.
    pub fn checkpoint(dir: impl Into<PathBuf>, base: ModelSpec) -> ModelSpec {
        ModelSpec::from(Source::Checkpoint {
            dir: dir.into(),
            base: Box::new(base),
        })
    }

    /// The same model with one more rewrite.
    pub fn with(mut self, r: Rewrite) -> ModelSpec {
        self.rewrites.push(r);
        self
    }

    /// The same model with the matches of `select` replaced by what `f` makes at their place.
    pub fn replace(
        self,
        select: Select,
        f: impl Fn(&Place<'_>, &Builder) -> Result<Node> + Send + Sync + 'static,
    ) -> ModelSpec {
        self.structural(select, f, |layer| Action::Replace { layer })
    }

    /// The same model with each match of `select` inside what `f` makes (`place.wrapped`).
    pub fn wrap(
        self,
        select: Select,
        f: impl Fn(&Place<'_>, &Builder) -> Result<Node> + Send + Sync + 'static,
    ) -> ModelSpec {
        self.structural(select, f, |layer| Action::Wrap { layer })
    }

    /// The same model with what `f` makes inserted before (or `after`) each match of
    /// `select`, named `<match>_before` (`<match>_after`).
    pub fn insert(
        self,
        select: Select,
        after: bool,
        f: impl Fn(&Place<'_>, &Builder) -> Result<Node> + Send + Sync + 'static,
    ) -> ModelSpec {
        self.structural(select, f, |layer| Action::Insert { layer, after })
    }

    fn structural(
        mut self,
        select: Select,
        f: impl Fn(&Place<'_>, &Builder) -> Result<Node> + Send + Sync + 'static,
        action: impl FnOnce(usize) -> Action,
    ) -> ModelSpec {
        let layer = self.layers.0.len();
        self.layers.0.push(Arc::new(f));
        self.rewrites.push(Rewrite::new(select, action(layer)));
        self
    }

    /// The Hugging Face directory the model starts from, through checkpoints.
    pub fn hf_dir(&self) -> Option<&Path> {
        match &self.source {
            Source::HfDir(d) => Some(d),
            Source::Checkpoint { base, .. } => base.hf_dir(),
            _ => self.pretrained.as_deref(),
        }
    }

    /// Builds the source's tree (before the rewrites).
    pub fn build_source(&self, registry: &Registry, builder: &Builder) -> Result<Node> {
        match &self.source {
            Source::HfDir(dir) => hf_tree(dir, builder),
            Source::Builder { name, args } => {
                let build = registry.builder(name).ok_or_else(|| {
                    Error::Config(format!(
                        "unknown builder `{name}` (known: {})",
                        registry.known_builders().join(", ")
                    ))
                })?;
                build(args, &builder.root())
            }
            Source::Layers(f) => f(builder),
            Source::Checkpoint { dir, base } => {
                let tree = base.build(registry, builder)?;
                super::checkpoint::continued(dir, tree, builder)
            }
        }
    }

    /// The weights a quantizing rewrite will quantize, when the model is a Hugging Face
    /// directory loaded with values: found by running the rewrites up to the last quantizing
    /// one on the model's slots (shapes only; adapters start as slots, not from their files),
    /// so that the load quantizes each weight as it reads it.
    fn quantize_at_load(
        &self,
        registry: &Registry,
        builder: &Builder,
    ) -> Result<Option<crate::models::hf::QuantizeAtLoad>> {
        let last = self
            .rewrites
            .iter()
            .rposition(|r| matches!(r.action, Action::Quantize { .. }));
        let (Source::HfDir(_), Some(last), Some(_)) = (&self.source, last, builder.seed) else {
            return Ok(None);
        };
        let slots = Builder::slots().dtype(builder.kind);
        let shapes = ModelSpec {
            rewrites: self.rewrites[..=last]
                .iter()
                .map(|r| match &r.action {
                    Action::Lora { config, .. } => Rewrite {
                        action: Action::Lora {
                            config: config.clone(),
                            init: None,
                        },
                        ..r.clone()
                    },
                    _ => r.clone(),
                })
                .collect(),
            ..self.clone()
        }
        .build(registry, &slots)?;
        let mut q = crate::models::hf::QuantizeAtLoad::new();
        shapes.walk(&mut |_, n| {
            let (Some(lin), Ok(ParamEntry::Slot(s))) = (
                n.layer_as::<crate::layers::linear::Linear>(),
                n.param_entry("weights"),
            ) else {
                return;
            };
            if let Some(f) = s.quantized {
                let inputs: i64 = lin.input_axes.values().product();
                q.insert(s.label.clone(), (f.to_string(), inputs));
            }
        });
        Ok(Some(q))
    }

    /// The context the rewrites run in: `builder`, and the pretrained architecture when the
    /// model comes from a Hugging Face directory.
    pub fn context<'a>(
        &self,
        builder: &'a Builder,
        arch: Option<&'a crate::models::hf::Arch>,
    ) -> Result<Context<'a>> {
        let cx = Context::new(builder);
        match arch {
            Some(a) => cx.with_arch(a),
            None => Ok(cx),
        }
    }

    /// Builds the model: the source, then the rewrites (an error names the rewrite, and the
    /// recipe key that wrote it when there is one).
    pub fn build(&self, registry: &Registry, builder: &Builder) -> Result<Node> {
        let tree = match (&self.source, self.quantize_at_load(registry, builder)?) {
            (Source::HfDir(dir), Some(q)) => {
                crate::models::hf::load_quantized(dir, Some(builder.kind), builder.device, &q)?.tree
            }
            _ => self.build_source(registry, builder)?,
        };
        if self.rewrites.is_empty() {
            return Ok(tree);
        }
        let arch = match self.hf_dir() {
            Some(d) => Some(crate::models::hf::read_config(d)?),
            None => None,
        };
        let cx = self
            .context(builder, arch.as_ref())?
            .with_layers(&self.layers);
        apply(tree, &self.rewrites, &cx).map_err(|e| {
            let origin = self.rewrites.get(e.index).and_then(|r| r.origin.clone());
            let message = e.into_error().to_string();
            match origin {
                Some((section, field)) => Error::InSection {
                    section,
                    field,
                    message,
                },
                None => Error::Config(message),
            }
        })
    }
}

impl From<Source> for ModelSpec {
    fn from(source: Source) -> ModelSpec {
        ModelSpec {
            source,
            rewrites: vec![],
            pretrained: None,
            layers: NewLayers::default(),
        }
    }
}

/// A Hugging Face directory's tree: loaded values with a seeded builder (in its dtype, on its
/// device), shapes with slots.
pub fn hf_tree(dir: &Path, builder: &Builder) -> Result<Node> {
    if !dir.join("config.json").is_file() {
        return Err(Error::Config(format!(
            "`{}` is not a HuggingFace model directory (no config.json)",
            dir.display()
        )));
    }
    if builder.seed.is_some() {
        crate::models::hf::load(dir, Some(builder.kind), builder.device).map(|m| m.tree)
    } else {
        crate::models::hf::read_config(dir)
            .and_then(|a| a.build(builder))
            .map(|d| d.tree)
    }
}
