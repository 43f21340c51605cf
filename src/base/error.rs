//! The one error type of the library. Every fallible operation returns [`Result`]; errors carry
//! the context a user needs: the layer path, the axis names and the shapes involved.

use std::fmt;

/// Result alias used across pzt.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in pzt's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A named-axis mismatch: unknown axis, duplicate axis, two sizes for one name, ...
    #[error("{0}")]
    Axis(String),
    /// An error reported by libtorch, with what pzt was doing when it happened.
    #[error("{}", torch_message(.context, .source))]
    Torch {
        context: String,
        #[source]
        source: tch::TchError,
    },
    /// An error inside a layer, with the path of the layer in the model tree.
    #[error("at layer `{}`: {source}", path_display(.path))]
    Layer {
        path: Vec<String>,
        source: Box<Error>,
    },
    /// A bad configuration value (layer config, builder argument).
    #[error("{0}")]
    Config(String),
    /// A bad field in a layer's or builder's config: `field` is its dotted path inside the
    /// config (empty for the config as a whole).
    #[error("{message}")]
    ConfigField { field: String, message: String },
    /// A bad value of a key in a recipe section, found while running (a `[data]` file, the
    /// `[train]` device): the command line points at the key in the recipe.
    #[error("{message}")]
    InSection {
        section: String,
        field: String,
        message: String,
    },
    /// Bad contents of an input file: a data file (with the line), a model directory's
    /// `config.json` or weights. Shown as `path:line: message`.
    #[error("{}", file_message(.path, *.line, .message))]
    BadFile {
        path: String,
        line: Option<usize>,
        message: String,
    },
    /// A training run that failed (NaN, interrupted, ...): exit code 1.
    #[error("{0}")]
    Run(String),
    /// A bad recipe; the message is fully rendered (file, line, column, snippet).
    #[error("{0}")]
    Recipe(String),
    /// A selection that cannot be applied (no parent Sequential, wrong count, bad path, ...).
    #[error("{0}")]
    Select(String),
    /// A parameter or state variable problem (unbound slot, missing label, shape mismatch).
    #[error("{0}")]
    Param(String),
    /// Something from the C++ shim.
    #[error("libtorch: {0}")]
    Shim(String),
    /// File input/output.
    #[error("{}", io_message(.path, .source))]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A libtorch message without its C++ backtrace and source-location noise.
pub fn clean_torch_message(m: &str) -> String {
    let mut out = m;
    for marker in [
        "\nException raised from",
        "Exception raised from",
        "\nframe #0",
    ] {
        if let Some(i) = out.find(marker) {
            out = &out[..i];
        }
    }
    out.trim()
        .trim_start_matches("Internal torch error: ")
        .trim()
        .to_string()
}

/// An input/output error in words: a full disk says so and names the file being written.
pub fn io_message(path: &str, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC) {
        return format!("no space left on device (writing {path})");
    }
    let mut m = e.to_string();
    if let Some(i) = m.find(" (os error") {
        m.truncate(i);
    }
    format!("{path}: {}", m.to_lowercase())
}

/// The input/output error inside a libtorch error (reading or writing a safetensors file).
fn torch_io(e: &tch::TchError) -> Option<(&str, &std::io::Error)> {
    match e {
        tch::TchError::Io(io) => Some(("", io)),
        tch::TchError::SafeTensorError {
            path,
            err: safetensors::SafeTensorError::IoError(io),
        } => Some((path, io)),
        _ => None,
    }
}

fn torch_message(context: &str, e: &tch::TchError) -> String {
    match torch_io(e) {
        Some((path, io)) => {
            let path = if path.is_empty() { context } else { path };
            io_message(path, io)
        }
        None => format!("{context}: {}", clean_torch_message(&e.to_string())),
    }
}

fn file_message(path: &str, line: Option<usize>, message: &str) -> String {
    match line {
        Some(l) => format!("{path}:{l}: {message}"),
        None => format!("{path}: {message}"),
    }
}

fn path_display(path: &[String]) -> String {
    if path.is_empty() {
        "<root>".to_string()
    } else {
        path.join(".")
    }
}

impl Error {
    /// Prefixes the layer path of this error with `segment` (used while an error propagates up
    /// through parent layers, so the final message names the full path).
    pub fn in_child(self, segment: &str) -> Error {
        match self {
            Error::Layer { mut path, source } => {
                path.insert(0, segment.to_string());
                Error::Layer { path, source }
            }
            other => Error::Layer {
                path: vec![segment.to_string()],
                source: Box::new(other),
            },
        }
    }

    /// Marks an error as happening in the layer at the root of the current call.
    pub fn at_layer(self) -> Error {
        match self {
            e @ Error::Layer { .. } => e,
            other => Error::Layer {
                path: vec![],
                source: Box::new(other),
            },
        }
    }

    /// Whether the error is bad input (a recipe, an argument, a data file, a checkpoint): the
    /// command line exits with code 2 for these and 1 for everything else.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self.root_cause(),
            Error::Recipe(_)
                | Error::Config(_)
                | Error::ConfigField { .. }
                | Error::InSection { .. }
                | Error::BadFile { .. }
                | Error::Io { .. }
        ) || matches!(self.root_cause(), Error::Torch { source, .. } if torch_io(source).is_some())
    }

    /// The innermost error (below any layer-path wrappers).
    pub fn root_cause(&self) -> &Error {
        match self {
            Error::Layer { source, .. } => source.root_cause(),
            e => e,
        }
    }

    /// Bad contents of the file `path`.
    pub fn bad_file(path: impl std::fmt::Display, message: impl Into<String>) -> Error {
        Error::BadFile {
            path: path.to_string(),
            line: None,
            message: message.into(),
        }
    }

    /// Bad contents of line `line` (1-based) of the file `path`.
    pub fn bad_line(
        path: impl std::fmt::Display,
        line: usize,
        message: impl Into<String>,
    ) -> Error {
        Error::BadFile {
            path: path.to_string(),
            line: Some(line),
            message: message.into(),
        }
    }

    /// Puts a [`Error::ConfigField`] into `section` (other errors pass through).
    pub fn in_section(self, section: &str) -> Error {
        match self {
            Error::ConfigField { field, message } => Error::InSection {
                section: section.to_string(),
                field,
                message,
            },
            other => other,
        }
    }

    /// The layer path this error carries, if any.
    pub fn layer_path(&self) -> Option<String> {
        match self {
            Error::Layer { path, .. } => Some(path_display(path)),
            _ => None,
        }
    }
}

impl From<tch::TchError> for Error {
    fn from(source: tch::TchError) -> Self {
        Error::Torch {
            context: "libtorch".into(),
            source,
        }
    }
}

/// Adds context to libtorch errors.
pub trait TorchContext<T> {
    /// Wraps a `TchError` with a description of the operation that failed.
    fn ctx(self, what: impl fmt::Display) -> Result<T>;
}

impl<T> TorchContext<T> for std::result::Result<T, tch::TchError> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|source| Error::Torch {
            context: what.to_string(),
            source,
        })
    }
}

/// Shorthand for an axis error.
pub(crate) fn axis_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Axis(msg.into()))
}
