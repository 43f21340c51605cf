//! PEFT LoRA adapters: reading an adapter directory (`adapter_config.json`,
//! `adapter_model.safetensors`) into a tree's `LowRankAdapter`s, and writing a tree's adapters
//! as one that `peft.PeftModel.from_pretrained` loads.
//!
//! peft names a module's adapter tensors `base_model.model.<module>.lora_A.weight` (`[r, in]`),
//! `...lora_B.weight` (`[out, r]`) and, with DoRA, `...lora_magnitude_vector` (`[out]`), where
//! `<module>` is the HF name of the adapted Linear (`model.layers.0.self_attn.q_proj`). pzt's
//! adapter of the Linear whose weights are labelled `<name>.weights` holds `<name>.lora_a.weights`
//! (`[input axes..., r]`), `<name>.lora_b.weights` (`[r, output axes...]`) and `<name>.magnitude`.

use super::names::weight_map;
use super::transform::Transform;
use super::Arch;
use crate::base::{Error, Result, TorchContext};
use crate::layers::toolshed::{LoraConfig, LowRankAdapter};
use crate::tree::Node;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tch::Tensor;

const PREFIX: &str = "base_model.model.";

/// A PEFT LoRA adapter read from a directory.
pub struct Adapter {
    pub dir: PathBuf,
    pub rank: i64,
    pub alpha: f64,
    pub dropout: f64,
    pub dora: bool,
    /// `target_modules`.
    pub targets: Vec<String>,
    /// `exclude_modules`: modules the targets match that stay without an adapter.
    pub exclude: Vec<String>,
    pub base_model: Option<String>,
    tensors: Vec<(String, Tensor)>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("dir", &self.dir)
            .field("rank", &self.rank)
            .field("alpha", &self.alpha)
            .field("targets", &self.targets)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// The adaptable Linears of `arch`'s model: `(HF module name, pzt weight label)`.
pub fn linear_modules(arch: &Arch) -> Result<Vec<(String, String)>> {
    Ok(weight_map(arch)?
        .into_iter()
        .filter(|(_, _, tr)| matches!(tr, Transform::Linear(_)))
        .filter_map(|(label, hf, _)| {
            hf.strip_suffix(".weight")
                .map(|m| (m.to_string(), label.clone()))
        })
        .collect())
}

/// The modules `[strategy.lora] targets` may name: the Linears, and the fused ones (GPT-NeoX's
/// `query_key_value`, Phi-3's `qkv_proj` and `gate_up_proj`), which name pzt's separate
/// Linears.
pub fn target_modules(arch: &Arch) -> Result<Vec<(String, String)>> {
    Ok(weight_map(arch)?
        .into_iter()
        .filter(|(_, _, tr)| {
            matches!(
                tr,
                Transform::Linear(_) | Transform::QkvWeight(_) | Transform::Rows { .. }
            )
        })
        .filter_map(|(label, hf, _)| {
            hf.strip_suffix(".weight")
                .map(|m| (m.to_string(), label.clone()))
        })
        .collect())
}

/// Whether an HF module name is matched by a peft target (the name or its last segments).
pub fn module_matches(module: &str, target: &str) -> bool {
    module == target || module.ends_with(&format!(".{target}"))
}

fn adapter_name(weight_label: &str) -> String {
    weight_label
        .strip_suffix(".weights")
        .unwrap_or(weight_label)
        .to_string()
}

/// peft's `exclude_modules`: a list of module names (a regex pattern is refused).
fn exclude_modules(v: Option<&Value>) -> std::result::Result<Vec<String>, String> {
    match v {
        None => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| "`exclude_modules` must hold strings".to_string())
            })
            .collect(),
        Some(Value::String(s)) => Err(format!(
            "`exclude_modules` is the pattern `{s}`; pzt reads a list of module names"
        )),
        Some(other) => Err(format!(
            "`exclude_modules` must be a list of module names, got {other}"
        )),
    }
}

/// A parsed `adapter_config.json`, with its path for error messages.
struct AdapterConfig {
    path: PathBuf,
    json: Value,
}

impl AdapterConfig {
    /// Reads and parses `dir/adapter_config.json`.
    fn read(dir: &Path) -> Result<AdapterConfig> {
        let path = dir.join("adapter_config.json");
        let text = crate::base::files::read_small_file(&path)?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| Error::bad_file(path.display(), e.to_string()))?;
        Ok(AdapterConfig { path, json })
    }

    /// The value of key `k`; None when it is absent or null.
    fn get(&self, k: &str) -> Option<&Value> {
        self.json.get(k).filter(|v| !v.is_null())
    }

    /// An error about this file.
    fn bad(&self, m: String) -> Error {
        Error::bad_file(self.path.display(), m)
    }

    /// The LoRA settings `(rank, alpha, dropout, dora)`, checked; a `peft_type` other than
    /// LoRA is an error.
    fn lora_settings(&self) -> Result<(i64, f64, f64, bool)> {
        if let Some(t) = self.get("peft_type").and_then(|v| v.as_str()) {
            if t != "LORA" {
                return Err(self.bad(format!("peft_type is `{t}`; pzt reads LoRA adapters only")));
            }
        }
        let rank = self
            .get("r")
            .and_then(|v| v.as_i64())
            .filter(|&r| LoraConfig::rank_problem(r).is_none())
            .ok_or_else(|| {
                self.bad(format!(
                    "`r` must be an integer in 1..={}",
                    crate::layers::toolshed::lora::MAX_RANK
                ))
            })?;
        // peft's default when the key is absent.
        let alpha = match self.get("lora_alpha") {
            None => 8.0,
            Some(v) => v
                .as_f64()
                .filter(|a| a.is_finite() && *a > 0.0)
                .ok_or_else(|| self.bad("`lora_alpha` must be a positive number".into()))?,
        };
        let dropout = self
            .get("lora_dropout")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        if !(0.0..1.0).contains(&dropout) {
            return Err(self.bad(format!("`lora_dropout` must be in [0, 1), got {dropout}")));
        }
        let dora = self
            .get("use_dora")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        Ok((rank, alpha, dropout, dora))
    }

    /// `target_modules`: a list of module names, or `all-linear` (a regex pattern is refused).
    fn targets(&self) -> Result<Vec<String>> {
        Ok(match self.get("target_modules") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| self.bad("`target_modules` must hold strings".into()))
                })
                .collect::<Result<_>>()?,
            Some(Value::String(s)) if s == "all-linear" => vec![s.clone()],
            Some(Value::String(s)) => {
                return Err(self.bad(format!(
                    "`target_modules` is the pattern `{s}`; pzt reads a list of module names"
                )))
            }
            _ => return Err(self.bad("`target_modules` is missing".into())),
        })
    }

    /// Refuses settings beyond plain LoRA/DoRA on Linear weights (biases, rsLoRA, per-module
    /// patterns, extra trained modules, ...).
    fn check_supported(&self) -> Result<()> {
        let get = |k: &str| self.get(k);
        for (k, ok) in [
            ("bias", get("bias").is_none_or(|v| v == "none")),
            ("use_rslora", get("use_rslora").is_none_or(|v| v == false)),
            (
                "fan_in_fan_out",
                get("fan_in_fan_out").is_none_or(|v| v == false),
            ),
            ("lora_bias", get("lora_bias").is_none_or(|v| v == false)),
            (
                "modules_to_save",
                get("modules_to_save").is_none_or(|v| v == &json!([])),
            ),
            ("layers_to_transform", get("layers_to_transform").is_none()),
            ("target_parameters", get("target_parameters").is_none()),
            (
                "rank_pattern",
                get("rank_pattern").is_none_or(|v| v == &json!({})),
            ),
            (
                "alpha_pattern",
                get("alpha_pattern").is_none_or(|v| v == &json!({})),
            ),
        ] {
            if !ok {
                return Err(self.bad(format!(
                    "`{k}` = {} is not supported by pzt (only plain LoRA/DoRA on Linear weights)",
                    self.json[k]
                )));
            }
        }
        Ok(())
    }
}

/// Reads `dir/adapter_model.safetensors` (a missing file, e.g. an `adapter_model.bin`
/// adapter, is an error).
fn read_adapter_tensors(dir: &Path) -> Result<Vec<(String, Tensor)>> {
    let mp = dir.join("adapter_model.safetensors");
    if !mp.is_file() {
        return Err(Error::bad_file(
            mp.display(),
            "missing (pzt reads safetensors adapters, not adapter_model.bin)",
        ));
    }
    Tensor::read_safetensors(&mp).map_err(|e| {
        Error::bad_file(
            mp.display(),
            crate::base::error::clean_torch_message(&e.to_string()),
        )
    })
}

impl Adapter {
    /// Reads `dir/adapter_config.json` and `dir/adapter_model.safetensors`; settings pzt cannot
    /// honour are errors naming the file and key.
    pub fn read(dir: &Path) -> Result<Adapter> {
        let c = AdapterConfig::read(dir)?;
        let (rank, alpha, dropout, dora) = c.lora_settings()?;
        let targets = c.targets()?;
        let exclude = exclude_modules(c.get("exclude_modules")).map_err(|m| c.bad(m))?;
        c.check_supported()?;
        let tensors = read_adapter_tensors(dir)?;
        Ok(Adapter {
            dir: dir.to_path_buf(),
            rank,
            alpha,
            dropout,
            dora,
            targets,
            exclude,
            base_model: c
                .get("base_model_name_or_path")
                .and_then(|v| v.as_str())
                .map(String::from),
            tensors,
        })
    }

    /// Copies the adapter's tensors into the adapters of `tree` (a model of `arch` whose
    /// target Linears were adapted with this adapter's rank): every tensor must find its
    /// parameter, with a shape that fits, and every adapter parameter must get a tensor. Slots
    /// (a tree built for planning) are only checked.
    pub fn load_into(&self, tree: &Node, arch: &Arch) -> Result<()> {
        let file = self.dir.join("adapter_model.safetensors");
        let bad = |m: String| Error::bad_file(file.display(), m);
        let modules: BTreeMap<String, String> = linear_modules(arch)?.into_iter().collect();
        let params: BTreeMap<String, crate::params::ParamEntry> = tree
            .all_param_entries()
            .into_iter()
            .map(|(_, _, e)| (e.label().to_string(), e))
            .collect();
        let mut filled = BTreeSet::new();
        for (key, t) in &self.tensors {
            let rest = key.strip_prefix(PREFIX).unwrap_or(key);
            let (module, which) = [
                (".lora_A.weight", "lora_a.weights"),
                (".lora_B.weight", "lora_b.weights"),
                (".lora_magnitude_vector", "magnitude"),
            ]
            .iter()
            .find_map(|(suffix, which)| rest.strip_suffix(suffix).map(|m| (m, *which)))
            .ok_or_else(|| bad(format!("tensor `{key}` is not a LoRA A, B or magnitude")))?;
            let wl = modules.get(module).ok_or_else(|| {
                bad(format!(
                    "tensor `{key}`: the model has no Linear module `{module}`"
                ))
            })?;
            let label = format!("{}.{which}", adapter_name(wl));
            let p = params.get(&label).ok_or_else(|| {
                bad(format!(
                    "tensor `{key}`: module `{module}` is not adapted in this model (`{label}`)"
                ))
            })?;
            let shape = p.shape();
            check_tensor(key, t, which, self.rank, shape.iter().product()).map_err(&bad)?;
            let v = match which {
                "magnitude" => t.f_reshape(&shape),
                _ => t
                    .f_transpose(0, 1)
                    .and_then(|x| x.f_contiguous())
                    .and_then(|x| x.f_reshape(&shape)),
            }
            .map_err(|_| {
                bad(format!(
                    "tensor `{key}` has shape {:?}, which does not fit `{label}` {shape:?}",
                    t.size()
                ))
            })?;
            // Slots (planning) get their shapes checked; live parameters their values.
            if let crate::params::ParamEntry::Bound(p) = p {
                p.copy_from(&v.f_to_kind(p.kind()).ctx("adapter")?)?;
            }
            filled.insert(label);
        }
        for label in params.keys() {
            let is_adapter = label.ends_with(".lora_a.weights")
                || label.ends_with(".lora_b.weights")
                || label.ends_with(".magnitude");
            if is_adapter && !filled.contains(label) {
                return Err(bad(format!("holds no tensor for `{label}`")));
            }
        }
        Ok(())
    }
}

/// Checks an adapter tensor before it is copied: a floating-point dtype, finite values, and
/// exactly peft's layout for its `numel` elements: `lora_A` is `[r, in]`, `lora_B` `[out, r]`,
/// a magnitude `[out]` (a tensor of the right size in another layout would be copied scrambled).
fn check_tensor(
    key: &str,
    t: &Tensor,
    which: &str,
    rank: i64,
    numel: i64,
) -> std::result::Result<(), String> {
    use tch::Kind::*;
    if !matches!(t.kind(), Float | Double | Half | BFloat16) {
        return Err(format!(
            "tensor `{key}` has dtype {:?}; adapter weights are floating point",
            t.kind()
        ));
    }
    let want: Vec<i64> = match which {
        "lora_a.weights" => vec![rank, numel / rank.max(1)],
        "lora_b.weights" => vec![numel / rank.max(1), rank],
        _ => vec![numel],
    };
    if t.size() != want {
        return Err(format!(
            "tensor `{key}` has shape {:?}; with r = {rank} peft stores it as {want:?}",
            t.size()
        ));
    }
    let finite = t
        .f_isfinite()
        .and_then(|f| f.f_all())
        .map(|a| a.int64_value(&[]) == 1)
        .unwrap_or(false);
    if !finite {
        return Err(format!("tensor `{key}` holds NaN or infinite values"));
    }
    Ok(())
}

/// Parameters trained besides the adapters (`[strategy] trainable`, e.g. the output head) have
/// no place in a PEFT LoRA adapter: an adapter without them is not the trained model.
fn only_adapters_trained(tree: &Node) -> Result<()> {
    let in_adapters = crate::layers::toolshed::adapter_labels(tree);
    let extra: Vec<String> = tree
        .trainable_parameters()
        .iter()
        .map(|p| p.label().to_string())
        .filter(|l| !in_adapters.contains(l))
        .collect();
    if let Some(first) = extra.first() {
        return Err(Error::Config(format!(
            "export --peft: the run also trained `{first}`{} besides the adapters ([strategy] trainable), which a PEFT LoRA adapter cannot hold; export with --hf (the adapters merged, the trained parameters as they are)",
            match extra.len() {
                1 => String::new(),
                n => format!(" and {} more", n - 1),
            }
        )));
    }
    Ok(())
}

/// Writes the adapters of `tree` (a model of `arch`) as a PEFT adapter directory.
pub fn write(tree: &Node, arch: &Arch, out: &Path, base_model: &str) -> Result<()> {
    if arch.multimodal {
        return Err(Error::Config(format!(
            "export --peft: the base is the language model of a multimodal checkpoint ({}), whose modules peft names under the vision-language model; a PEFT adapter for it is not written yet. `export --hf` writes the merged language model",
            arch.model_type
        )));
    }
    let adapters = crate::tree::select(tree).at_instances_of("LowRankAdapter");
    let found = adapters.get();
    if found.is_empty() {
        return Err(Error::Config(
            "export --peft: the model has no LoRA adapters (train with [strategy] kind = \"lora\")"
                .into(),
        ));
    }
    only_adapters_trained(tree)?;
    let w = collect(arch, &found)?;
    moe_dense_mlp(arch, &w.adapted)?;
    let settings = w.settings.unwrap_or((8, 8.0, 0.0, false));
    let mut universe = linear_modules(arch)?;
    universe.extend(w.fused_modules.iter().map(|m| (m.clone(), m.clone())));
    let modules: BTreeMap<String, String> = universe.into_iter().map(|(m, l)| (l, m)).collect();
    let targets = target_names(&modules, &w.adapted);
    let dir = crate::base::atomic_dir::AtomicDir::create(out)?;
    let mp = dir.path().join("adapter_model.safetensors");
    Tensor::write_safetensors(&w.tensors, &mp).ctx(format!("write {}", mp.display()))?;
    write_adapter_config(dir.path(), base_model, settings, targets, &w.patterns)?;
    dir.merge().map(|_| ())
}

/// peft (with transformers 5) reads `gate_proj`, `up_proj` and `down_proj` in a Qwen3-MoE
/// adapter as the experts' projections, so the dense MLP of a layer without experts
/// (`mlp_only_layers`) cannot be adapted in a PEFT adapter: refused, naming the module.
fn moe_dense_mlp(arch: &Arch, adapted: &[String]) -> Result<()> {
    if arch.family != super::Family::Qwen3Moe {
        return Ok(());
    }
    let dense = adapted.iter().find(|m| {
        ["gate_proj", "up_proj", "down_proj"]
            .iter()
            .any(|p| m.ends_with(&format!(".mlp.{p}")))
    });
    match dense {
        None => Ok(()),
        Some(m) => Err(Error::Config(format!(
            "export --peft: `{m}` is the dense MLP of a layer without experts; peft reads `gate_proj`, `up_proj` and `down_proj` in a Qwen3-MoE adapter as the experts' and would leave it out (export --hf merges it; or target the attention alone)"
        ))),
    }
}

/// What an adapter directory holds: peft's tensors, the adapted modules, the one set of
/// settings, and the rank and alpha of fused modules (`rank_pattern`, `alpha_pattern`).
struct Written {
    tensors: Vec<(String, Tensor)>,
    adapted: Vec<String>,
    settings: Option<(i64, f64, f64, bool)>,
    patterns: Vec<(String, i64, f64)>,
    fused_modules: Vec<String>,
}

/// The peft tensors of the adapters `found` in `arch`'s module names; the adapters on parts of
/// a fused module (Phi-3's `qkv_proj`, `gate_up_proj`) become one LoRA of that module.
fn collect(arch: &Arch, found: &[(String, &Node)]) -> Result<Written> {
    let modules: BTreeMap<String, String> = linear_modules(arch)?
        .into_iter()
        .map(|(m, l)| (l, m))
        .collect();
    let map = weight_map(arch)?;
    let fused: BTreeSet<String> = map
        .iter()
        .filter(|(_, _, tr)| matches!(tr, Transform::QkvWeight(_)))
        .map(|(label, _, _)| label.clone())
        .collect();
    let rows: BTreeMap<String, (String, i64, i64)> = map
        .iter()
        .filter_map(|(label, hf, tr)| match tr {
            Transform::Rows { start, total, .. } => hf
                .strip_suffix(".weight")
                .map(|m| (label.clone(), (m.to_string(), *start, *total))),
            _ => None,
        })
        .collect();
    let mut w = Written {
        tensors: vec![],
        adapted: vec![],
        settings: None,
        patterns: vec![],
        fused_modules: rows.values().map(|r| r.0.clone()).collect(),
    };
    let mut groups: BTreeMap<String, FusedParts> = BTreeMap::new();
    for (path, node) in found {
        let ad = node
            .layer_as::<LowRankAdapter>()
            .ok_or_else(|| Error::Config("export --peft: not an adapter".into()))?;
        same_settings(path, ad, &mut w.settings)?;
        let wl = node
            .child("pretrained")?
            .child("0")?
            .param_entry("weights")?
            .label()
            .to_string();
        if let Some((module, start, total)) = rows.get(&wl) {
            if ad.dora {
                return Err(Error::Config(format!("export --peft: adapter `{path}` is DoRA on part of the fused `{module}`; peft's DoRA magnitude of a fused module is not written yet (export --hf merges it)")));
            }
            let (a, b) = lora_ab(node, ad)?;
            let g = groups.entry(module.clone()).or_insert(FusedParts {
                total: *total,
                parts: vec![],
            });
            g.parts.push((*start, a, b));
            continue;
        }
        let module = hf_module(path, node, &modules, &fused)?;
        adapter_tensors(node, ad, module, &mut w.tensors)?;
        w.adapted.push(module.clone());
    }
    let (r, alpha) = w.settings.map_or((8, 8.0), |s| (s.0, s.1));
    for (module, mut g) in groups {
        let (t, n) = fused_tensors(&module, &mut g)?;
        w.tensors.extend(t);
        if n != 1 {
            w.patterns.push((module.clone(), n * r, n as f64 * alpha));
        }
        w.adapted.push(module);
    }
    Ok(w)
}

/// Records the first adapter's `(rank, alpha, dropout, dora)` in `settings`; an adapter with
/// other settings is an error (one PEFT config holds one set).
fn same_settings(
    path: &str,
    ad: &LowRankAdapter,
    settings: &mut Option<(i64, f64, f64, bool)>,
) -> Result<()> {
    let s = (ad.rank, ad.alpha, ad.dropout, ad.dora);
    match *settings {
        None => *settings = Some(s),
        Some(t) if t != s => {
            return Err(Error::Config(format!(
                "export --peft: adapter `{path}` has rank {}, alpha {}, dropout {}, dora {}, unlike the others; one PEFT config cannot hold both",
                ad.rank, ad.alpha, ad.dropout, ad.dora
            )))
        }
        _ => {}
    }
    Ok(())
}

/// The HF module name of the Linear that the adapter `node` (at `path`) adapts; `modules`
/// maps weight labels to module names, `fused` holds the labels inside GPT-NeoX's fused
/// `query_key_value` (which no PEFT module can stand for).
fn hf_module<'m>(
    path: &str,
    node: &Node,
    modules: &'m BTreeMap<String, String>,
    fused: &BTreeSet<String>,
) -> Result<&'m String> {
    let lin = node.child("pretrained")?.child("0")?;
    let wl = lin.param_entry("weights")?.label().to_string();
    modules.get(&wl).ok_or_else(|| {
        if fused.contains(&wl) {
            Error::Config(format!(
                "export --peft: adapter `{path}` adapts part of GPT-NeoX's fused `query_key_value`; one PEFT module cannot hold pzt's separate query, key and value adapters (export --hf merges them)"
            ))
        } else {
            Error::Config(format!(
                "export --peft: adapter `{path}` adapts `{wl}`, which has no HF Linear module name"
            ))
        }
    })
}

/// Appends the adapter `node`'s tensors in peft's names and layouts to `tensors`: float32 on
/// the CPU, `lora_A` as `[r, in]`, `lora_B` as `[out, r]`, and with DoRA the magnitude as
/// `[out]`.
fn adapter_tensors(
    node: &Node,
    ad: &LowRankAdapter,
    module: &str,
    tensors: &mut Vec<(String, Tensor)>,
) -> Result<()> {
    let (a, b) = lora_ab(node, ad)?;
    tensors.push((format!("{PREFIX}{module}.lora_A.weight"), a));
    tensors.push((format!("{PREFIX}{module}.lora_B.weight"), b));
    if ad.dora {
        let m = cpu(node.param("magnitude")?)?
            .f_reshape([-1])
            .and_then(|x| x.f_contiguous())
            .ctx("export magnitude")?;
        tensors.push((format!("{PREFIX}{module}.lora_magnitude_vector"), m));
    }
    Ok(())
}

/// A tensor detached, as float32 on the CPU.
fn cpu(t: Tensor) -> Result<Tensor> {
    t.f_detach()
        .and_then(|x| x.f_to_device(tch::Device::Cpu))
        .and_then(|x| x.f_to_kind(tch::Kind::Float))
        .ctx("export --peft")
}

/// The adapter's A as peft's `[r, in]` and B as `[out, r]`, float32 on the CPU.
fn lora_ab(node: &Node, ad: &LowRankAdapter) -> Result<(Tensor, Tensor)> {
    let upd = node.child("update")?;
    let a = cpu(upd.child("lora_a")?.param("weights")?)?;
    let b = cpu(upd.child("lora_b")?.param("weights")?)?;
    let r = ad.rank;
    let a = a
        .f_reshape([-1, r])
        .and_then(|x| x.f_transpose(0, 1))
        .and_then(|x| x.f_contiguous())
        .ctx("export lora_A")?;
    let b = b
        .f_reshape([r, -1])
        .and_then(|x| x.f_transpose(0, 1))
        .and_then(|x| x.f_contiguous())
        .ctx("export lora_B")?;
    Ok((a, b))
}

/// The adapters on the parts of one fused module (Phi-3's `qkv_proj`): its rows and, per
/// adapted part, its first row, A and B.
struct FusedParts {
    total: i64,
    parts: Vec<(i64, Tensor, Tensor)>,
}

/// One LoRA for a fused module, exactly the parts' adapters side by side: A stacks the parts'
/// A (`[n r, in]`), B puts each part's B in its rows and its own `r` columns (zeros elsewhere),
/// so `B A` is the parts' updates in their rows. Its rank is `n r`, and `alpha` becomes
/// `n alpha` so that the scale `alpha / r` stays.
fn fused_tensors(module: &str, f: &mut FusedParts) -> Result<(Vec<(String, Tensor)>, i64)> {
    f.parts.sort_by_key(|p| p.0);
    let r = f.parts.first().map_or(0, |p| p.1.size()[0]);
    let n = f.parts.len() as i64;
    let a = Tensor::f_cat(&f.parts.iter().map(|p| &p.1).collect::<Vec<_>>(), 0)
        .ctx("export fused lora_A")?;
    let b = Tensor::f_zeros([f.total, n * r], (tch::Kind::Float, tch::Device::Cpu))
        .ctx("export fused lora_B")?;
    for (j, (start, _, part_b)) in f.parts.iter().enumerate() {
        let len = part_b.size()[0];
        b.f_narrow(0, *start, len)
            .and_then(|x| x.f_narrow(1, j as i64 * r, r))
            .and_then(|mut x| x.f_copy_(part_b))
            .ctx("export fused lora_B")?;
    }
    Ok((
        vec![
            (format!("{PREFIX}{module}.lora_A.weight"), a),
            (format!("{PREFIX}{module}.lora_B.weight"), b),
        ],
        n,
    ))
}

/// The `target_modules` for the `adapted` modules: short names (`q_proj`) when they select
/// exactly the adapted modules among all of `modules`, else the full names.
fn target_names(modules: &BTreeMap<String, String>, adapted: &[String]) -> Vec<String> {
    let all: Vec<&String> = modules.values().collect();
    let short: BTreeSet<String> = adapted
        .iter()
        .filter_map(|m| m.rsplit('.').next().map(String::from))
        .collect();
    let covered: BTreeSet<&String> = all
        .iter()
        .copied()
        .filter(|m| short.iter().any(|s| module_matches(m, s)))
        .collect();
    if covered.len() == adapted.len() {
        short.into_iter().collect()
    } else {
        adapted.to_vec()
    }
}

/// Writes `dir/adapter_config.json` for a plain LoRA/DoRA adapter of `base_model` with these
/// `(rank, alpha, dropout, dora)` settings and target modules.
fn write_adapter_config(
    dir: &Path,
    base_model: &str,
    settings: (i64, f64, f64, bool),
    targets: Vec<String>,
    patterns: &[(String, i64, f64)],
) -> Result<()> {
    let (rank, alpha, dropout, dora) = settings;
    // peft matches a pattern key as a regular expression against the end of a module's name.
    let key = |m: &str| m.replace('.', "\\.");
    let rank_pattern: serde_json::Map<String, Value> = patterns
        .iter()
        .map(|(m, r, _)| (key(m), json!(r)))
        .collect();
    let alpha_pattern: serde_json::Map<String, Value> = patterns
        .iter()
        .map(|(m, _, a)| (key(m), json!(a)))
        .collect();
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "use_dora": dora,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "layers_to_transform": null,
        "layers_pattern": null,
        "lora_bias": false,
        "revision": null,
    });
    let cp = dir.join("adapter_config.json");
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| Error::Config(format!("adapter_config.json: {e}")))?;
    std::fs::write(&cp, text).map_err(|source| Error::Io {
        path: cp.display().to_string(),
        source,
    })
}
