//! Writes a model tree back as a recipe `[model]` table, so that recipe -> tree -> TOML -> tree
//! gives the same tree and the same parameter labels (the tree's own serializer, in its recipe
//! form: [`crate::tree::Form::Recipe`]).

use crate::base::Result;
use crate::tree::{Form, Node};

/// The whole model as TOML text of a `[model]` section.
pub fn model_toml(node: &Node) -> Result<String> {
    let mut root = toml::Table::new();
    root.insert(
        "model".into(),
        toml::Value::Table(node.to_toml_as(Form::Recipe)?),
    );
    toml::to_string(&root).map_err(|e| crate::Error::Config(format!("cannot write TOML: {e}")))
}
