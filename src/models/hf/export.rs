//! Writing a model back as a Hugging Face model directory.

use super::names;
use super::transform::{to_hf, Transform};
use super::Arch;
use crate::base::{Error, Result, TorchContext};
use crate::tree::{Builder, Node};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// Writes `tree` (a model built for `arch`) as a HuggingFace model directory: `config.json`
/// (the original one, with `dtype` set) and `model.safetensors` in the family's names and
/// layouts.
pub fn export(tree: &Node, arch: &Arch, config_json: &str, out: &Path, dtype: Kind) -> Result<()> {
    check_structure(tree, arch)?;
    let dir = crate::base::atomic_dir::AtomicDir::create(out)?;
    let params = cpu_params(tree)?;
    let outt = hf_tensors(arch, &params)?;
    let outt: Vec<(String, Tensor)> = outt
        .into_iter()
        .map(|(n, t)| {
            Ok((
                n,
                t.f_to_kind(dtype)
                    .and_then(|x| x.f_contiguous())
                    .ctx("export")?,
            ))
        })
        .collect::<Result<_>>()?;
    let mp = dir.path().join("model.safetensors");
    Tensor::write_safetensors(&outt, &mp).ctx(format!("write {}", mp.display()))?;
    write_config(dir.path(), config_json, dtype, arch.multimodal)?;
    dir.merge().map(|_| ())
}

/// The HF layout can only express the family's own structure: refuses a patched tree rather
/// than silently dropping the patch.
fn check_structure(tree: &Node, arch: &Arch) -> Result<()> {
    let reference = arch.build(&Builder::slots())?.tree;
    if !reference.same_structure(tree) {
        return Err(Error::Config(format!(
            "export: the model's structure differs from a plain {} model (changed by [[patch]]es?); the HuggingFace layout cannot express it",
            arch.model_type
        )));
    }
    Ok(())
}

/// The values of all parameters of `tree` by label, detached, as float32 on the CPU.
fn cpu_params(tree: &Node) -> Result<BTreeMap<String, Tensor>> {
    tree.all_param_entries()
        .into_iter()
        .map(|(_, _, e)| {
            Ok((
                e.label().to_string(),
                e.value()?
                    .f_detach()
                    .and_then(|x| x.f_to_device(tch::Device::Cpu))
                    .and_then(|x| x.f_to_kind(Kind::Float))
                    .ctx("export")?,
            ))
        })
        .collect::<Result<_>>()
}

/// The HF tensors for `params`: each weight under its HF name in the HF layout, the fused QKV
/// weights and biases (GPT-NeoX) after the others.
fn hf_tensors(arch: &Arch, params: &BTreeMap<String, Tensor>) -> Result<Vec<(String, Tensor)>> {
    let get = |l: &str| {
        params
            .get(l)
            .map(|t| t.shallow_clone())
            .ok_or_else(|| Error::Config(format!("export: the model has no parameter `{l}`")))
    };
    let mut fused: BTreeMap<String, Vec<(i64, Tensor, bool)>> = BTreeMap::new();
    let mut rows: BTreeMap<String, Vec<(i64, Tensor)>> = BTreeMap::new();
    let mut columns: BTreeMap<String, Vec<(i64, Tensor)>> = BTreeMap::new();
    let mut outt: Vec<(String, Tensor)> = vec![];
    for (label, hf, tr) in names::weight_map(arch)? {
        let t = get(&label)?;
        match tr {
            Transform::QkvWeight(k) => fused.entry(hf).or_default().push((k, t, true)),
            Transform::QkvBias(k) => fused.entry(hf).or_default().push((k, t, false)),
            Transform::Rows { start, .. } => {
                rows.entry(hf).or_default().push((start, to_hf(&t, tr)?));
            }
            Transform::Columns { offset, .. } => columns.entry(hf).or_default().push((offset, t)),
            _ => outt.push((hf, to_hf(&t, tr)?)),
        }
    }
    for (hf, parts) in fused {
        outt.push((hf, fuse_qkv(arch, parts)?));
    }
    for (hf, mut parts) in rows {
        // The blocks in row order, one fused weight again.
        parts.sort_by_key(|p| p.0);
        let ts: Vec<&Tensor> = parts.iter().map(|p| &p.1).collect();
        outt.push((hf, Tensor::f_cat(&ts, 0).ctx("export fused weight")?));
    }
    for (hf, mut parts) in columns {
        // Interleaved again: part k in the columns k, k + n, k + 2n, ...
        parts.sort_by_key(|p| p.0);
        let ts: Vec<&Tensor> = parts.iter().map(|p| &p.1).collect();
        let st = Tensor::f_stack(&ts, -1).ctx("export interleaved weight")?;
        let mut shape = st.size();
        let n = shape.pop().unwrap_or(1);
        if let Some(l) = shape.last_mut() {
            *l *= n;
        }
        outt.push((
            hf,
            st.f_reshape(shape.as_slice())
                .ctx("export interleaved weight")?,
        ));
    }
    Ok(outt)
}

/// Fuses the query, key and value parts `(index, tensor, is weight)` of one GPT-NeoX
/// `query_key_value` weight or bias into HF's interleaved-per-head layout.
fn fuse_qkv(arch: &Arch, mut parts: Vec<(i64, Tensor, bool)>) -> Result<Tensor> {
    let (h, d) = (arch.decoder.num_heads, arch.decoder.head_dim);
    parts.sort_by_key(|p| p.0);
    let per: Vec<Tensor> = parts
        .iter()
        .map(|(_, t, w)| {
            if *w {
                t.f_reshape([arch.decoder.d_model, h, d])
                    .and_then(|x| x.f_permute([1, 2, 0]))
            } else {
                t.f_reshape([h, d])
            }
        })
        .collect::<std::result::Result<_, _>>()
        .ctx("export fused QKV")?;
    let st = Tensor::f_stack(&per, 1).ctx("export fused QKV")?;
    let flat = if parts.first().map(|p| p.2).unwrap_or(true) {
        st.f_reshape([3 * h * d, arch.decoder.d_model])
    } else {
        st.f_reshape([3 * h * d])
    };
    flat.and_then(|x| x.f_contiguous()).ctx("export fused QKV")
}

/// Writes `dir/config.json`: the model's original `config_json` with its dtype key
/// (`torch_dtype` when present, else `dtype`) set to `dtype`.
/// Writes `config.json`: the original with `dtype` set; for the language model of a multimodal
/// checkpoint, its text config as a text-only model (`Gemma3ForCausalLM`), since the vision
/// tower was not loaded.
fn write_config(dir: &Path, config_json: &str, dtype: Kind, text_only: bool) -> Result<()> {
    let mut cfg: serde_json::Value = serde_json::from_str(config_json)
        .map_err(|e| Error::Config(format!("config.json: {e}")))?;
    if text_only {
        if let Some(mut text) = super::config::multimodal_text(&cfg, "config.json")? {
            if let Some(m) = text.as_object_mut() {
                m.insert(
                    "architectures".into(),
                    serde_json::json!(["Gemma3ForCausalLM"]),
                );
            }
            cfg = text;
        }
    }
    if let Some(m) = cfg.as_object_mut() {
        // The weights are written dequantized (an MXFP4 gpt-oss was dequantized on load).
        m.remove("quantization_config");
        let name = crate::base::dtype::name(dtype);
        let key = if m.contains_key("torch_dtype") {
            "torch_dtype"
        } else {
            "dtype"
        };
        m.insert(key.into(), serde_json::Value::String(name.into()));
    }
    let cp = dir.join("config.json");
    let text = serde_json::to_string_pretty(&cfg)
        .map_err(|e| Error::Config(format!("config.json: {e}")))?;
    std::fs::write(&cp, text).map_err(|source| Error::Io {
        path: cp.display().to_string(),
        source,
    })
}
