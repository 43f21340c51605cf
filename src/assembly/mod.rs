//! Model assembly as data: a model is built, then changed by a list of [`Rewrite`]s, each a
//! selection ([`Select`]) and what to do to it ([`Action`]): LoRA adapters, freezing, training
//! only some parameters, activation checkpointing, removal, and replacing, wrapping or inserting
//! layers ([`structure`]). One engine ([`apply`]) runs them in
//! order over the toolshed ([`crate::layers::toolshed`]), the way Penzai's selections are
//! applied, and says which rewrite failed and why ([`RewriteError`]), without knowing where the
//! rewrite was written: a recipe's `[strategy]` and its `[[patch]]`es both become rewrites
//! (recipe/ turns the errors into located messages), and a Rust program writes them directly:
//!
//! ```no_run
//! use pzt::assembly::{apply, Action, Context, Rewrite, Select};
//! use pzt::layers::toolshed::LoraConfig;
//! # fn main() -> pzt::Result<()> {
//! let registry = pzt::builtin_registry();
//! let builder = pzt::tree::Builder::new(0);
//! let model = pzt::models::hf::load(std::path::Path::new("my-llama"), None, tch::Device::Cpu)?;
//! let lora = LoraConfig { rank: 16, alpha: 32.0, ..LoraConfig::default() };
//! let rewrites = [
//!     Rewrite::new(Select::targets(["q_proj", "v_proj"]), Action::Lora { config: lora, init: None }),
//!     Rewrite::new(Select::nothing(), Action::TrainOnly { adapters: true }),
//! ];
//! let cx = Context::new(&builder).with_arch(&model.arch)?;
//! let tree = apply(model.tree, &rewrites, &cx).map_err(|e| e.into_error())?;
//! # let _ = (tree, registry);
//! # Ok(())
//! # }
//! ```

pub mod checkpoint;
pub mod memory;
mod spec;
pub mod structure;
mod targets;

pub use spec::{hf_tree, LayersFn, ModelSpec, NewLayerFn, NewLayers, Source};
pub use structure::{MakeLayer, Place};

use crate::base::{Error, Result};
use crate::layers::toolshed::{self, LoraConfig};
use crate::models::hf::peft::{target_modules, Adapter};
use crate::models::hf::Arch;
use crate::tree::{Builder, Node, Selection};
use std::collections::BTreeSet;
use std::sync::Arc;

/// What a rewrite applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    /// The subtrees these selectors select, together. Each selector must match something;
    /// with `expect_count`, the union must hold exactly that many subtrees.
    Selectors {
        selectors: Vec<String>,
        expect_count: Option<usize>,
    },
    /// LoRA targets, as peft names them: HF module names of a pretrained model (`q_proj`),
    /// `"all-linear"` (every contracting Linear but the output head), or selectors (the
    /// Linears within what they select). `exclude` names HF modules left without adapters.
    Targets {
        targets: Vec<String>,
        exclude: Vec<String>,
    },
}

impl Select {
    /// The union of selectors, each of which must match.
    pub fn selectors<S: Into<String>>(s: impl IntoIterator<Item = S>) -> Select {
        Select::Selectors {
            selectors: s.into_iter().map(Into::into).collect(),
            expect_count: None,
        }
    }
    /// LoRA targets (see [`Select::Targets`]).
    pub fn targets<S: Into<String>>(t: impl IntoIterator<Item = S>) -> Select {
        Select::Targets {
            targets: t.into_iter().map(Into::into).collect(),
            exclude: vec![],
        }
    }
    /// No subtree.
    pub fn nothing() -> Select {
        Select::selectors(Vec::<String>::new())
    }
}

/// What a rewrite does to its selection.
#[derive(Debug, Clone)]
pub enum Action {
    /// LoRA (or DoRA) adapters on the contracting Linears within the selection, their values
    /// read from a PEFT adapter when `init` is given (which needs a pretrained model).
    Lora {
        config: LoraConfig,
        init: Option<Arc<Adapter>>,
    },
    /// Stop training the parameters in the selection.
    Freeze,
    /// Train only the parameters in the selection, and the LoRA adapters when `adapters`.
    TrainOnly { adapters: bool },
    /// Recompute each selected subtree in the backward pass.
    Checkpoint,
    /// Keep the frozen weights of the Linears in the selection quantized (`nf4` or `int8`),
    /// but those under the `skip` selectors.
    Quantize { format: String, skip: Vec<String> },
    /// Take the selected subtrees out of their parents.
    Remove,
    /// Replace each match with layer `layer` of the context's [`MakeLayer`].
    Replace { layer: usize },
    /// Put each match inside layer `layer` of the context's [`MakeLayer`].
    Wrap { layer: usize },
    /// Insert layer `layer` of the context's [`MakeLayer`] before (or `after`) each match.
    Insert { layer: usize, after: bool },
}

/// One rewrite.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub select: Select,
    pub action: Action,
    /// The recipe section and key that wrote it, for errors found when the model is built
    /// ([`crate::Error::InSection`]).
    pub origin: Option<(String, String)>,
}

impl Rewrite {
    pub fn new(select: Select, action: Action) -> Rewrite {
        Rewrite {
            select,
            action,
            origin: None,
        }
    }

    /// The same rewrite, written by `field` of `[section]`.
    pub fn written_at(mut self, section: &str, field: &str) -> Rewrite {
        self.origin = Some((section.into(), field.into()));
        self
    }
}

/// What went wrong, for the front end (a recipe, a program) to word and locate.
#[derive(Debug)]
pub enum Problem {
    /// A selector does not parse; `column` is where, in the selector.
    BadSelector {
        selector: String,
        message: String,
        column: usize,
    },
    /// A selector selects nothing.
    MatchesNothing { selector: String },
    /// The selection's size is not `expect_count`.
    Count {
        selector: String,
        found: usize,
        expected: usize,
        paths: Vec<String>,
    },
    /// A LoRA target is neither an HF module name of the model nor a selector; `modules` are
    /// the model's Linear module names (empty without a pretrained model).
    NotATarget {
        target: String,
        message: String,
        modules: Vec<String>,
    },
    /// A LoRA target matches nothing.
    TargetMatchesNothing {
        target: String,
        modules: Vec<String>,
    },
    /// A LoRA target, or a LoRA rewrite's selection, holds no contracting Linear.
    NoLinear { target: Option<String> },
    /// The PEFT adapter to start from cannot be used.
    Adapter(String),
    /// The action failed on the selection.
    Failed(Error),
}

/// Rewrite `index` (of the list given to [`apply`]) failed.
#[derive(Debug)]
pub struct RewriteError {
    pub index: usize,
    pub problem: Problem,
}

impl RewriteError {
    /// A plain error for programs that do not locate it further.
    pub fn into_error(self) -> Error {
        let i = self.index;
        let m = match self.problem {
            Problem::BadSelector {
                selector, message, ..
            } => format!("bad selector `{selector}`: {message}"),
            Problem::MatchesNothing { selector } => {
                format!("selector `{selector}` matches nothing")
            }
            Problem::Count {
                selector,
                found,
                expected,
                ..
            } => format!("selector `{selector}` matched {found} subtrees, expected {expected}"),
            Problem::NotATarget {
                target, message, ..
            } => format!("`{target}` is neither an HF module name nor a selector: {message}"),
            Problem::TargetMatchesNothing { target, .. } => {
                format!("target `{target}` matches nothing")
            }
            Problem::NoLinear { target: Some(t) } => format!("target `{t}` selects no Linear"),
            Problem::NoLinear { target: None } => {
                "the selection holds no contracting Linear to adapt".into()
            }
            Problem::Adapter(m) => m,
            Problem::Failed(e) => e.to_string(),
        };
        Error::Config(format!("rewrite {i}: {m}"))
    }
}

/// What the rewrites may need besides the tree: the builder new parameters (adapters) come
/// from, and the pretrained model's architecture (its HF module names, for targets and
/// adapters).
pub struct Context<'a> {
    builder: &'a Builder,
    /// What structural rewrites put in place.
    layers: Option<&'a dyn MakeLayer>,
    arch: Option<&'a Arch>,
    /// `(HF module, weight label)` of each Linear of the pretrained model.
    modules: Option<Vec<(String, String)>>,
}

impl<'a> Context<'a> {
    pub fn new(builder: &'a Builder) -> Context<'a> {
        Context {
            builder,
            layers: None,
            arch: None,
            modules: None,
        }
    }

    /// The model is this pretrained architecture.
    /// The layers that replace, wrap and insert rewrites put in place.
    pub fn with_layers(mut self, layers: &'a dyn MakeLayer) -> Context<'a> {
        self.layers = Some(layers);
        self
    }

    pub fn with_arch(mut self, arch: &'a Arch) -> Result<Context<'a>> {
        self.modules = Some(target_modules(arch)?);
        self.arch = Some(arch);
        Ok(self)
    }
}

/// Applies the rewrites in order.
pub fn apply(tree: Node, rewrites: &[Rewrite], cx: &Context) -> Result<Node, RewriteError> {
    let mut tree = tree;
    for (index, r) in rewrites.iter().enumerate() {
        let fail = |problem| RewriteError { index, problem };
        let selection = select_in(&tree, &r.select, cx.modules.as_deref()).map_err(fail)?;
        tree = act(&selection, &r.action, cx).map_err(fail)?;
    }
    Ok(tree)
}

/// What `select` selects in `tree` (LoRA targets named by HF module names need a pretrained
/// model's [`Context`], which [`apply`] has).
pub fn select(tree: &Node, select: &Select) -> Result<Selection, Problem> {
    select_in(tree, select, None)
}

fn select_in(
    tree: &Node,
    select: &Select,
    modules: Option<&[(String, String)]>,
) -> Result<Selection, Problem> {
    match select {
        Select::Selectors {
            selectors,
            expect_count,
        } => targets::union(tree, selectors, *expect_count),
        Select::Targets { targets, exclude } => {
            targets::lora_targets(tree, targets, exclude, modules)
        }
    }
}

fn act(selection: &Selection, action: &Action, cx: &Context) -> Result<Node, Problem> {
    let layers = || {
        cx.layers.ok_or_else(|| {
            Problem::Failed(Error::Config(
                "a replace, wrap or insert rewrite needs layers to put in place (Context::with_layers)".into(),
            ))
        })
    };
    match action {
        Action::Replace { layer } => structure::replace(selection, *layer, layers()?, cx.builder),
        Action::Wrap { layer } => structure::wrap(selection, *layer, layers()?, cx.builder),
        Action::Insert { layer, after } => {
            structure::insert(selection, *layer, *after, layers()?, cx.builder)
        }
        Action::Freeze => toolshed::freeze(selection).map_err(Problem::Failed),
        Action::Checkpoint => toolshed::checkpoint_activations(selection).map_err(Problem::Failed),
        Action::Quantize { format, skip } => {
            let skipped = if skip.is_empty() {
                BTreeSet::new()
            } else {
                toolshed::freeze::labels_under(&targets::union(selection.root(), skip, None)?)
            };
            toolshed::quantize::quantize(selection, format, &|l| skipped.contains(l))
                .map_err(Problem::Failed)
        }
        Action::Remove => selection.remove_from_parent().map_err(Problem::Failed),
        Action::TrainOnly { adapters: false } => {
            toolshed::train_only(selection).map_err(Problem::Failed)
        }
        Action::TrainOnly { adapters: true } => {
            let root = selection.root();
            let mut keep: BTreeSet<String> = toolshed::adapter_labels(root);
            keep.extend(toolshed::freeze::labels_under(selection));
            toolshed::freeze::freeze_where(root, &|l| !keep.contains(l)).map_err(Problem::Failed)
        }
        Action::Lora { config, init } => {
            let linears = toolshed::linears_within(selection);
            if linears.count() == 0 {
                return Err(Problem::NoLinear { target: None });
            }
            let tree = toolshed::loraify(&linears, config, cx.builder).map_err(Problem::Failed)?;
            if let Some(a) = init {
                let arch = cx.arch.ok_or_else(|| {
                    Problem::Adapter(
                        "`init_from` needs a model loaded from an HF directory (`[model] hf = ...`)"
                            .into(),
                    )
                })?;
                a.load_into(&tree, arch)
                    .map_err(|e| Problem::Adapter(e.to_string()))?;
            }
            Ok(tree)
        }
    }
}
