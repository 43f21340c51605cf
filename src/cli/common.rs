//! What the commands share: the failure kinds behind the exit codes, and parsing of the
//! `--device`, `--dtype` and `--tokens` arguments.

use pzt::backend;
use std::io::IsTerminal;

/// Why a command failed; `main` turns it into a message and an exit code.
pub enum Failure {
    /// Bad input (exit 2): the message, printed after `error: `.
    BadInput(String),
    /// A bad-input message already rendered (with `error:` and a snippet).
    Rendered(String),
    /// A failed run (exit 1).
    Run(String),
    /// An expectation on the metrics failed (exit 3): what to print on stderr.
    Expectation(String),
    /// Exit with this code, printing nothing more (what failed has said so already).
    Exit(u8),
}

/// The failure for a library error: recipes are rendered, bad input exits 2, the rest 1.
pub fn lib_err(e: pzt::Error) -> Failure {
    match e {
        pzt::Error::Recipe(m) => Failure::Rendered(m),
        other if other.is_bad_input() => Failure::BadInput(other.to_string()),
        other => Failure::Run(other.to_string()),
    }
}

/// `--device auto|cpu|cuda`.
pub fn parse_device(s: &str) -> Result<tch::Device, Failure> {
    backend::parse_device(s).map_err(|e| match e {
        backend::DeviceError::NoCuda => {
            Failure::BadInput("--device cuda: libtorch sees no CUDA device on this machine".into())
        }
        backend::DeviceError::Unknown(other) => Failure::BadInput(format!(
            "--device: expected auto, cpu or cuda, got `{other}`"
        )),
    })
}

/// `--dtype float32|bfloat16|float16|float64`.
pub fn parse_dtype(d: &Option<String>) -> Result<Option<tch::Kind>, Failure> {
    match d {
        None => Ok(None),
        Some(s) => pzt::layers::misc::parse_dtype(s)
            .map(Some)
            .map_err(|e| Failure::BadInput(format!("--dtype: {e}"))),
    }
}

/// Colours only on a terminal, and not under `NO_COLOR`.
pub fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// libtorch's deterministic cuBLAS needs `CUBLAS_WORKSPACE_CONFIG` set before CUDA starts; a
/// deterministic run sets it unless the user did.
pub fn deterministic_cublas(spec: &pzt::spec::RunSpec) {
    if spec.train.deterministic && std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
    }
}

/// The model at `path` (`pzt logits`, `pzt generate`) on `--device`, in `--dtype`.
pub fn load_model(
    path: &std::path::Path,
    dtype: &Option<String>,
    device: &str,
) -> Result<(pzt::loader::Loaded, tch::Device), Failure> {
    let device = parse_device(device)?;
    let m = load_with(path, &[], parse_dtype(dtype)?, device).map_err(lib_err)?;
    Ok((m, device))
}

/// Loads any MODEL argument with `--set` edits: a Hugging Face directory as it is (through
/// the recipe [`pzt::recipe::of_model::of_model`] makes for it when edited), a checkpoint (its
/// recipe's model with its parameters) or a recipe.
pub fn load_with(
    path: &std::path::Path,
    sets: &[String],
    dtype: Option<tch::Kind>,
    device: tch::Device,
) -> pzt::Result<pzt::loader::Loaded> {
    use pzt::run::model_path::{model_path, resolve_model, ModelPath};
    let path = &resolve_model(path)?;
    let kind = model_path(path)?;
    if kind == ModelPath::Hf && sets.is_empty() {
        let m = pzt::loader::load_hf(path, dtype, device)?;
        for n in &m.notes {
            eprintln!("note: {n}");
        }
        return Ok(m);
    }
    let recipe = pzt::recipe::of_model::of_model(path, sets)?;
    let m = pzt::loader::load_spec(&recipe.model_load(&pzt::builtin_registry())?, device, dtype)?;
    if kind == ModelPath::Checkpoint {
        pzt::run::checkpoint::load_model(path, &m.tree)?;
    }
    Ok(m)
}

/// The input tokens of `pzt logits` / `pzt generate`: `--tokens`, or text tokenized with the
/// model's tokenizer; every id must be in the vocabulary.
pub fn model_tokens(
    m: &pzt::loader::Loaded,
    tokens: &Option<String>,
    text: &Option<String>,
) -> Result<Vec<i64>, Failure> {
    let ids = match (tokens, text) {
        (Some(t), _) => pzt::loader::parse_tokens(t).map_err(lib_err)?,
        (None, Some(t)) => match &m.tokenizer {
            // As transformers' `tokenizer(text)`: with the special tokens it adds (BOS).
            Some(tok) => tok.encode_special(t).map_err(lib_err)?,
            None => {
                return Err(Failure::BadInput(
                    "this model has no tokenizer (tokenizer.json); pass --tokens".into(),
                ))
            }
        },
        (None, None) => {
            return Err(Failure::BadInput(
                "give the input as --tokens \"1 2 3\" or as text".into(),
            ))
        }
    };
    if ids.is_empty() {
        return Err(Failure::BadInput("the input is empty".into()));
    }
    let lookups = pzt::tree::select(&m.tree).at_instances_of("EmbeddingLookup");
    if lookups.count() == 0 {
        return Err(Failure::BadInput(
            "this model is not a language model (it has no EmbeddingLookup of token ids); logits and generate need one".into(),
        ));
    }
    if let Some((_, n)) = lookups.get().first() {
        if let Some(l) = n.layer_as::<pzt::layers::embedding::EmbeddingLookup>() {
            if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= l.vocab_size) {
                return Err(Failure::BadInput(format!(
                    "token id {bad} is outside the vocabulary (0..{})",
                    l.vocab_size
                )));
            }
        }
    }
    Ok(ids)
}

/// `  name                 0.1234` lines of metrics.
pub fn print_metrics(m: &serde_json::Map<String, serde_json::Value>) {
    for (k, v) in m {
        pzt::base::text::out(&format!(
            "  {k:<20} {}",
            v.as_f64()
                .map(|f| format!("{f:.4}"))
                .unwrap_or_else(|| v.to_string())
        ));
    }
}

/// The model tree of a recipe, a HuggingFace directory or a checkpoint directory (patches
/// applied, parameters as slots).
pub fn tree_of(model: &std::path::Path, set: &[String]) -> Result<pzt::tree::Node, Failure> {
    let r = pzt::recipe::of_model::of_model(model, set).map_err(lib_err)?;
    pzt::recipe::plan::Plan::tree_only(&r, &pzt::builtin_registry()).map_err(lib_err)
}

/// Checks a command's outputs against its inputs and each other (see `pzt::base::outputs`):
/// bad input when one would overwrite an input, another output, or a special file.
pub fn check_outputs(o: &pzt::base::outputs::Outputs) -> Result<(), Failure> {
    o.check().map_err(lib_err)
}

/// The files and directories a loaded model was read from (besides the path it was given).
pub fn model_files(m: &pzt::loader::Loaded) -> Vec<std::path::PathBuf> {
    m.hf_dir
        .iter()
        .chain(m.tokenizer_path.iter())
        .cloned()
        .collect()
}
