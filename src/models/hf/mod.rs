//! Pretrained Hugging Face models: Llama, Mistral, Gemma 1/2/3, GPT-NeoX, Qwen 2/3,
//! StarCoder2, Granite, SmolLM3, OLMo 2, Phi-2, Phi-3, GLM-4 and Cohere (one converter each in
//! `families/`) map their `config.json` into the one decoder config
//! ([`crate::models::decoder`]) and build its tree; the weights of `model.safetensors` (or its
//! shards, memory-mapped) are matched to the parameters by the role the decoder builder gave
//! each one ([`names`]), and converted ([`transform`]). [`export`] writes a model back in the
//! family's layout.
//!
//! The tree is ordinary layers (so selectors, patches and `pzt show` work on it), and its
//! parameter labels are tree paths, like every builder's.

mod config;
mod export;
mod families;
mod mxfp4;
pub mod names;
pub mod peft;
pub mod transform;
mod weights;

pub use config::{parse, Arch, Family};
pub use export::export;
pub use weights::Weights;

use crate::base::{Error, Result, TorchContext};
use crate::models::decoder::Decoder;
use crate::params::quantized::Quantized;
use crate::params::{Parameter, QuantizedParameter};
use crate::tree::{Builder, Node};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};
use transform::{hf_shape, to_pzt, Transform};

impl Arch {
    /// Builds the model (parameters from `b`: slots, or values from its seed), with the role
    /// of each parameter.
    pub fn build(&self, b: &Builder) -> Result<Decoder> {
        self.decoder.build(&b.root())
    }
}

/// Tensors that some checkpoints carry and pzt recomputes (rotary caches, mask buffers).
fn recomputed(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
        || name.ends_with("attention.bias")
        || name.ends_with("attention.masked_bias")
}

/// A loaded model.
pub struct HfModel {
    pub arch: Arch,
    pub tree: Node,
    pub dir: PathBuf,
    /// What a user should know about the load (the vision tower of a multimodal checkpoint
    /// left out).
    pub notes: Vec<String>,
}

/// The tensors of a multimodal checkpoint that pzt leaves out: the vision tower and the
/// projector into the language model.
fn vision_tensor(name: &str) -> bool {
    let n = name.strip_prefix("model.").unwrap_or(name);
    n.starts_with("vision_tower.") || n.starts_with("multi_modal_projector.")
}

/// Where a multimodal checkpoint keeps the language model's tensors: `name` (a text model's
/// name, `model.…` or `lm_head.…`) as the checkpoint spells it (`layout`: None for a text
/// model, else whether it uses transformers 5's names). Hub checkpoints use
/// `language_model.model.…`; transformers 5's own module names are `model.language_model.…`.
fn text_name(layout: Option<bool>, name: &str) -> String {
    let Some(v5) = layout else {
        return name.to_string();
    };
    match (v5, name.strip_prefix("model.")) {
        (false, Some(rest)) => format!("language_model.model.{rest}"),
        (false, None) => format!("language_model.{name}"),
        (true, Some(rest)) => format!("model.language_model.{rest}"),
        (true, None) => name.to_string(),
    }
}

/// Reads and parses a model directory's `config.json`.
pub fn read_config(dir: &Path) -> Result<Arch> {
    let cp = dir.join("config.json");
    let text = crate::base::files::read_small_file(&cp)?;
    parse(&text, &cp.display().to_string())
}

/// Reads the checkpoint tensor `hf` for a parameter of `shape`, checking its shape. `last`
/// keeps the tensor read before, for the parameters that share one (gpt-oss's `gate_up_proj`).
fn read_tensor(
    dir: &Path,
    weights: &Weights,
    (hf, tr, shape): (&str, Transform, &[i64]),
    arch: &Arch,
    last: &mut Option<(String, Tensor)>,
) -> Result<Tensor> {
    let want = hf_shape(tr, shape, arch);
    let t = match last.as_ref().filter(|(n, _)| n == hf) {
        Some((_, t)) => t.shallow_clone(),
        None => weights.get(hf).map_err(|e| match e {
            Error::Config(m) if m.starts_with("`") => Error::bad_file(dir.display(), m),
            _ => Error::bad_file(
                dir.display(),
                format!("the checkpoint lacks `{hf}` (shape {want:?} expected)"),
            ),
        })?,
    };
    if t.size() != want {
        return Err(Error::bad_file(
            dir.display(),
            format!("`{hf}` has shape {:?}, expected {:?}", t.size(), want),
        ));
    }
    *last = Some((hf.to_string(), t.shallow_clone()));
    Ok(t)
}

/// Refuses a checkpoint tensor that no parameter used (a multimodal checkpoint's vision
/// tensors aside); returns how many vision tensors there are.
fn check_all_used(
    dir: &Path,
    weights: &Weights,
    arch: &Arch,
    layout: Option<bool>,
    used: &std::collections::BTreeSet<String>,
) -> Result<usize> {
    let mut vision = 0;
    let tied_head = text_name(layout, "lm_head.weight");
    for name in weights.names() {
        if arch.multimodal && vision_tensor(name) {
            vision += 1;
            continue;
        }
        let head = name == "lm_head.weight" || name == "embed_out.weight" || *name == tied_head;
        let spare = recomputed(name) || (arch.decoder.tie_embeddings && head);
        if !used.contains(name) && !spare {
            return Err(Error::bad_file(
                dir.display(),
                format!("the checkpoint has a tensor pzt does not use: `{name}`"),
            ));
        }
    }
    Ok(vision)
}

/// What a user should know about a load: vision tensors left out, MXFP4 tensors dequantized.
fn load_notes(dir: &Path, vision: usize, packed: usize, kind: Kind) -> Vec<String> {
    let mut notes = vec![];
    if vision > 0 {
        notes.push(format!(
            "{} is a multimodal checkpoint: its language model is loaded, and its vision tower and projector ({vision} tensors) are not used",
            dir.display()
        ));
    }
    if packed > 0 {
        notes.push(format!(
            "{}: {packed} MXFP4 tensors dequantized to {}",
            dir.display(),
            crate::base::dtype::name(kind)
        ));
    }
    notes
}

/// The checkpoint tensor `t` as the parameter's value: in `kind`, laid out by `tr`, on
/// `device`. It is cast first (layout transforms commute with a cast), so that a big tensor is
/// never copied in float32 on its way; `1 + w` is computed in float32.
fn converted(
    t: Tensor,
    tr: Transform,
    shape: &[i64],
    arch: &Arch,
    kind: Kind,
    device: tch::Device,
) -> Result<Tensor> {
    let v = match tr {
        Transform::PlusOne => to_pzt(&t.f_to_kind(Kind::Float).ctx("load")?, tr, shape, arch)?,
        _ => to_pzt(&t.f_to_kind(kind).ctx("load")?, tr, shape, arch)?,
    };
    drop(t);
    v.f_to_kind(kind)
        .and_then(|x| x.f_to_device(device))
        .ctx("load")
}

/// The weight `v` of `label` quantized as `format` (its Linear has `inputs` input values).
fn quantized_weight(
    label: &str,
    v: &Tensor,
    format: &str,
    inputs: i64,
) -> Result<QuantizedParameter> {
    let q = Quantized::new(v, inputs, format).map_err(|e| {
        Error::Config(format!(
            "`{label}`: {e}; leave it unquantized with `quantize_skip`"
        ))
    })?;
    Ok(QuantizedParameter::new(label, q))
}

/// Loads a model directory: config.json and its weights, in the checkpoint dtype or `dtype`.
pub fn load(dir: &Path, dtype: Option<Kind>, device: tch::Device) -> Result<HfModel> {
    load_quantized(dir, dtype, device, &BTreeMap::new())
}

/// Which weights to quantize as they are read: label -> (format, the Linear's input values).
pub type QuantizeAtLoad = BTreeMap<String, (String, i64)>;

/// [`load`], quantizing the weights `quantize` names as each is read (QLoRA): the base in its
/// own dtype is never in memory whole, only the tensor being read.
pub fn load_quantized(
    dir: &Path,
    dtype: Option<Kind>,
    device: tch::Device,
    quantize: &QuantizeAtLoad,
) -> Result<HfModel> {
    let cp = dir.join("config.json");
    let text = crate::base::files::read_small_file(&cp)?;
    let arch = parse(&text, &cp.display().to_string())?;
    let kind = dtype.unwrap_or(arch.dtype);
    let built = arch.build(&Builder::slots().dtype(kind))?;
    let tree = built.tree;
    let weights = Weights::open(dir)?;
    let mut params: BTreeMap<String, Parameter> = BTreeMap::new();
    let mut used = std::collections::BTreeSet::new();
    let mut experts: BTreeMap<String, Vec<(i64, Tensor)>> = BTreeMap::new();
    let mut packed = std::collections::BTreeSet::new();
    let mut last = None;
    let mut quantized: BTreeMap<String, QuantizedParameter> = BTreeMap::new();
    let slots: BTreeMap<String, Vec<i64>> = tree
        .all_param_entries()
        .into_iter()
        .map(|(_, _, e)| (e.label().to_string(), e.shape()))
        .collect();
    let layout = arch.multimodal.then(|| {
        weights
            .names()
            .any(|n| n.starts_with("model.language_model."))
    });
    for (label, hf, tr) in names::names(&arch, &built.parts) {
        let hf = text_name(layout, &hf);
        let shape = slots
            .get(&label)
            .ok_or_else(|| Error::Config(format!("internal: no parameter `{label}` for `{hf}`")))?;
        let t = read_tensor(dir, &weights, (&hf, tr, shape), &arch, &mut last)?;
        if weights.packed(&hf) {
            packed.insert(hf.clone());
            used.insert(format!("{hf}_blocks"));
            used.insert(format!("{hf}_scales"));
        }
        used.insert(hf.clone());
        let v = converted(t, tr, shape, &arch, kind, device)?;
        // The tensor read and its copies are freed: give their pages back now, so that what
        // loading frees between the weights it keeps does not add up (glibc keeps freed heap
        // memory in the process, and a quantized base is many small allocations among large
        // transient ones).
        crate::base::memory::release_freed();
        match tr {
            Transform::Expert { index, .. } | Transform::ExpertBias { index } => {
                experts.entry(label).or_default().push((index, v));
            }
            _ => match quantize.get(&label) {
                Some((format, inputs)) => {
                    let q = quantized_weight(&label, &v, format, *inputs)?;
                    quantized.insert(label, q);
                }
                None => {
                    params.insert(label.clone(), Parameter::new(label, v));
                }
            },
        }
    }
    // Experts stored one by one, stacked along the `experts` axis.
    for (label, mut slices) in experts {
        slices.sort_by_key(|s| s.0);
        let ts: Vec<Tensor> = slices.into_iter().map(|s| s.1).collect();
        let v = Tensor::f_stack(&ts, 0).ctx("stack experts")?;
        params.insert(label.clone(), Parameter::new(label, v));
    }
    let vision = check_all_used(dir, &weights, &arch, layout, &used)?;
    let list: Vec<Parameter> = params.into_values().collect();
    let tree = tree.bind_quantized(&quantized)?.bind(&list)?;
    Ok(HfModel {
        arch,
        tree,
        dir: dir.to_path_buf(),
        notes: load_notes(dir, vision, packed.len(), kind),
    })
}
