//! The registry: a value naming every layer kind (a factory that makes the layer from its
//! static config), the kinds that can also be declared by their arguments (`Affine` from
//! `input_axes` and `output_axes`), and the builders a recipe can name (`builder = "mlp"`).
//!
//! It is built at the top of the crate ([`crate::builtin_registry`]: the built-in kinds and
//! builders) and passed down to whatever reads models by name (TOML, recipes). Custom kinds are
//! registered into it (see `examples/custom_layer.rs`).

use super::{Layer, Node, Scope};
use crate::base::{Error, Result};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Makes a layer implementation from its config table.
pub type Factory = Arc<dyn Fn(&toml::Table) -> Result<Arc<dyn Layer>> + Send + Sync>;

/// Builds a subtree from arguments under a scope (a builder, or a kind declared by its
/// arguments). Errors about an argument are [`Error::ConfigField`]s naming it.
pub type Constructor = Arc<dyn Fn(&toml::Table, &Scope<'_>) -> Result<Node> + Send + Sync>;

/// A kind declared by its arguments: the argument names it takes, and how it is built.
#[derive(Clone)]
pub struct ArgsConstructor {
    pub args: Vec<String>,
    pub build: Constructor,
}

/// Layer kinds and builders by name. See the module docs.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Factory>,
    by_args: BTreeMap<String, ArgsConstructor>,
    builders: BTreeMap<String, Constructor>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.known_kinds())
            .field("builders", &self.known_builders())
            .finish()
    }
}

/// A factory for a layer type whose config is the type itself (serde).
pub fn serde_factory<T: Layer + DeserializeOwned>(kind: &str) -> Factory {
    let kind = kind.to_string();
    Arc::new(move |cfg: &toml::Table| {
        let layer: T = decode_config(&kind, cfg)?;
        layer.check()?;
        Ok(Arc::new(layer) as Arc<dyn Layer>)
    })
}

/// Decodes a config table into `T`, reporting the dotted path of a bad field.
pub fn decode_config<T: DeserializeOwned>(what: &str, cfg: &toml::Table) -> Result<T> {
    let value = toml::Value::Table(cfg.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let message = plain_message::<T>(cfg, &field, e.into_inner().to_string());
        Error::ConfigField {
            field,
            message: format!("{what}: {message}"),
        }
    })
}

/// Sets the value at a dotted path of tables (false when the path leads elsewhere).
fn set_path(t: &mut toml::Table, path: &str, v: toml::Value) -> bool {
    match path.split_once('.') {
        None => {
            t.insert(path.to_string(), v);
            true
        }
        Some((head, rest)) => match t.get_mut(head) {
            Some(toml::Value::Table(inner)) => set_path(inner, rest, v),
            _ => false,
        },
    }
}

/// serde's words for a value of the wrong type where one of a set of names (an enum) or a list
/// of strings was wanted ("invalid type: unit variant", "did not match any variant of untagged
/// enum"), said plainly, with the names when a probe can find them.
fn plain_message<T: DeserializeOwned>(cfg: &toml::Table, field: &str, message: String) -> String {
    let tail = message
        .find("\nin `")
        .map(|i| message[i..].to_string())
        .unwrap_or_default();
    if message.contains("did not match any variant of untagged enum") {
        return format!("expected a string or a list of strings{tail}");
    }
    if !(message.contains("unit variant") || message.contains("wanted exactly 1 element")) {
        return message;
    }
    // The same config with a string there makes serde list the names.
    let mut probe = cfg.clone();
    if !field.is_empty() && set_path(&mut probe, field, toml::Value::String("\u{1}".into())) {
        if let Err(e) = serde_path_to_error::deserialize::<_, T>(toml::Value::Table(probe)) {
            let m = e.into_inner().to_string();
            let names = m
                .split_once("unknown variant")
                .and_then(|(_, rest)| rest.split_once("expected "))
                .map(|(_, names)| names.split("\nin `").next().unwrap_or(names).to_string());
            if let Some(names) = names {
                return format!("expected a string, not a table, list or number: {names}{tail}");
            }
        }
    }
    format!("expected a string naming one of its values{tail}")
}

impl Registry {
    /// An empty registry (no kinds at all; see [`crate::builtin_registry`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) a layer kind.
    pub fn register_layer(&mut self, kind: &str, factory: Factory) {
        self.kinds.insert(kind.to_string(), factory);
    }

    /// Lets a registered kind be declared in a recipe by `args` instead of children
    /// (`{ type = "Affine", input_axes = ..., output_axes = ... }`).
    pub fn register_by_args(&mut self, kind: &str, args: &[&str], build: Constructor) {
        self.by_args.insert(
            kind.to_string(),
            ArgsConstructor {
                args: args.iter().map(|a| a.to_string()).collect(),
                build,
            },
        );
    }

    /// Registers (or replaces) a builder, named in recipes by `builder = "name"`.
    pub fn register_builder(&mut self, name: &str, build: Constructor) {
        self.builders.insert(name.to_string(), build);
    }

    /// The known layer kinds, sorted.
    pub fn known_kinds(&self) -> Vec<String> {
        self.kinds.keys().cloned().collect()
    }

    /// The known builders, sorted.
    pub fn known_builders(&self) -> Vec<String> {
        self.builders.keys().cloned().collect()
    }

    /// Whether `kind` is registered.
    pub fn has_kind(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    /// Makes a layer of `kind` from its config.
    pub fn make_layer(&self, kind: &str, cfg: &toml::Table) -> Result<Arc<dyn Layer>> {
        match self.kinds.get(kind) {
            Some(f) => f(cfg),
            None => Err(Error::Config(format!(
                "unknown layer kind `{kind}`; known kinds: {}",
                self.known_kinds().join(", ")
            ))),
        }
    }

    /// How `kind` is built from its arguments, if it can be.
    pub fn by_args(&self, kind: &str) -> Option<&ArgsConstructor> {
        self.by_args.get(kind)
    }

    /// The builder `name`.
    pub fn builder(&self, name: &str) -> Option<&Constructor> {
        self.builders.get(name)
    }
}
