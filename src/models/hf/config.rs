//! HuggingFace `config.json` -> [`Arch`] (a [`DecoderConfig`] and what the family's checkpoint
//! layout needs), for every family of [`super::families`], in both layouts found in the wild:
//! the older one (top-level `rope_theta`, `rope_scaling`, `torch_dtype`, NeoX's `rotary_pct` /
//! `rotary_emb_base`, a top-level `partial_rotary_factor`, Gemma 3's `rope_local_base_freq`)
//! and the newer one (`rope_parameters`, `dtype`, per-layer-type `rope_parameters`).
//!
//! Every key is either used, known not to change the computation, or rejected with an error
//! naming the key and its value: nothing is silently ignored. The keys every family shares are
//! read here; each family's own keys and tensor names are in [`super::families`].

use super::families::{self, Converter};
use crate::base::{Error, Result};
use crate::layers::misc::Activation;
use crate::layers::rope::RopeScaling;
use crate::models::decoder::{DecoderConfig, LayerAttention};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;

/// A model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    Gemma,
    Gemma2,
    Gemma3,
    GptNeox,
    Qwen2,
    Qwen3,
    Starcoder2,
    Granite,
    Smollm3,
    Olmo2,
    Phi3,
    Glm4,
    Qwen3Moe,
    Mixtral,
    GptOss,
    Phi,
    Cohere,
}

/// A pretrained model's architecture: the decoder it builds, and how its checkpoint stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Arch {
    pub family: Family,
    pub model_type: String,
    pub decoder: DecoderConfig,
    /// Gemma's `x * (1 + w)` RMSNorm: the checkpoint stores `w`, pzt's scale is `1 + w`.
    pub norm_plus_one: bool,
    pub eos: Vec<i64>,
    pub dtype: tch::Kind,
    /// The language model of a multimodal checkpoint (`Gemma3ForConditionalGeneration`): its
    /// tensors carry the `language_model.` prefix, and the vision tower beside it is not used.
    pub multimodal: bool,
}

/// A config.json being read: which keys were used, so that [`Cfg::finish`] can reject the rest.
pub struct Cfg<'a> {
    map: &'a Map<String, Value>,
    used: RefCell<BTreeSet<String>>,
    what: String,
}

fn bad(what: &str, key: &str, v: &Value, why: &str) -> Error {
    Error::bad_file(what, format!("`{key}` = {v} is not supported: {why}"))
}

impl<'a> Cfg<'a> {
    /// A message about this file.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::bad_file(&self.what, message.into())
    }
    pub fn get(&self, k: &str) -> Option<&'a Value> {
        self.used.borrow_mut().insert(k.to_string());
        self.map.get(k).filter(|v| !v.is_null())
    }
    pub fn int(&self, k: &str) -> Result<Option<i64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| {
                Error::bad_file(&self.what, format!("`{k}` = {v} should be an integer"))
            }),
        }
    }
    pub fn req_int(&self, k: &str) -> Result<i64> {
        self.int(k)?
            .ok_or_else(|| Error::bad_file(&self.what, format!("`{k}` is missing")))
    }
    pub fn float(&self, k: &str) -> Result<Option<f64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                Error::bad_file(&self.what, format!("`{k}` = {v} should be a number"))
            }),
        }
    }
    pub fn boolean(&self, k: &str) -> Result<Option<bool>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| {
                Error::bad_file(&self.what, format!("`{k}` = {v} should be a boolean"))
            }),
        }
    }
    pub fn string(&self, k: &str) -> Option<&'a str> {
        self.get(k).and_then(|v| v.as_str())
    }
    /// Requires a key, if present, to have one of the harmless values.
    pub fn only(&self, k: &str, ok: &[Value], why: &str) -> Result<()> {
        if let Some(v) = self.get(k) {
            if !ok.contains(v) {
                return Err(bad(&self.what, k, v, why));
            }
        }
        Ok(())
    }
    pub fn finish(&self, ignorable: &[&str]) -> Result<()> {
        let used = self.used.borrow();
        for (k, v) in self.map {
            if !used.contains(k) && !ignorable.contains(&k.as_str()) && !k.starts_with("_") {
                return Err(bad(&self.what, k, v, "pzt does not implement this setting"));
            }
        }
        Ok(())
    }
}

/// Keys that never change the forward computation.
const IGNORABLE: [&str; 15] = [
    "architectures",
    "transformers_version",
    "initializer_range",
    "use_cache",
    "bos_token_id",
    "pad_token_id",
    "max_position_embeddings",
    "is_decoder",
    "classifier_dropout",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "torchscript",
    "tokenizer_class",
    "id2label",
];

fn parse_rope(c: &Cfg, rp: &Value) -> Result<(f64, Option<RopeScaling>, Option<f64>)> {
    let what = c.what.as_str();
    let m = rp.as_object().ok_or_else(|| {
        Error::bad_file(what, format!("rope parameters should be a table, got {rp}"))
    })?;
    let f = |k: &str| m.get(k).and_then(|v| v.as_f64());
    let theta = f("rope_theta").unwrap_or(10_000.0);
    let partial = f("partial_rotary_factor");
    let ty = m
        .get("rope_type")
        .or_else(|| m.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let need = |k: &str| {
        f(k).ok_or_else(|| Error::bad_file(what, format!("rope type `{ty}` needs `{k}`")))
    };
    // transformers prefers a top-level `original_max_position_embeddings` (Phi-3 writes one),
    // then the rope parameters', then `max_position_embeddings` (YaRN).
    let original_max = || -> Result<f64> {
        match c.float("original_max_position_embeddings")? {
            Some(v) => Ok(v),
            None => match f("original_max_position_embeddings") {
                Some(v) => Ok(v),
                None if matches!(ty, "yarn" | "longrope" | "su") => {
                    c.float("max_position_embeddings")?.ok_or_else(|| {
                        Error::bad_file(
                            what,
                            format!("rope type `{ty}` needs `original_max_position_embeddings`"),
                        )
                    })
                }
                None => need("original_max_position_embeddings"),
            },
        }
    };
    let scaling = match ty {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: need("factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            original_max_position_embeddings: original_max()?,
        }),
        "yarn" => Some(yarn(c, m, original_max()?)?),
        "dynamic" => Some(RopeScaling::Dynamic {
            factor: need("factor")?,
            max_position_embeddings: c.float("max_position_embeddings")?.ok_or_else(|| {
                Error::bad_file(what, "rope type `dynamic` needs `max_position_embeddings`")
            })?,
        }),
        // `su` is LongRoPE's older name.
        "longrope" | "su" => Some(longrope(c, m, original_max()?)?),
        other => {
            return Err(Error::bad_file(
                what,
                format!(
                "rope_type `{other}` is not supported (supported: default, linear, llama3, yarn, longrope, dynamic)"
            ),
            ))
        }
    };
    known_rope_keys(what, m)?;
    Ok((theta, scaling, partial))
}

/// Refuses a RoPE setting pzt does not read.
fn known_rope_keys(what: &str, m: &serde_json::Map<String, Value>) -> Result<()> {
    for k in m.keys() {
        let known = [
            "rope_theta",
            "rope_type",
            "type",
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
            "partial_rotary_factor",
            "beta_fast",
            "beta_slow",
            "mscale",
            "mscale_all_dim",
            "attention_factor",
            "truncate",
            "short_factor",
            "long_factor",
        ];
        if !known.contains(&k.as_str()) {
            return Err(bad(
                what,
                &format!("rope_parameters.{k}"),
                &m[k],
                "pzt does not implement this RoPE setting",
            ));
        }
    }
    Ok(())
}

/// LongRoPE's settings, its attention factor resolved as transformers resolves it (from
/// `factor`, else `max_position_embeddings / original_max_position_embeddings`).
fn longrope(c: &Cfg, m: &serde_json::Map<String, Value>, omax: f64) -> Result<RopeScaling> {
    let list = |k: &str| -> Result<Vec<f64>> {
        m.get(k)
            .and_then(|v| v.as_array())
            .and_then(|a| a.iter().map(|x| x.as_f64()).collect::<Option<Vec<f64>>>())
            .ok_or_else(|| {
                Error::bad_file(
                    &c.what,
                    format!("rope type `longrope` needs `{k}`, a list of numbers"),
                )
            })
    };
    let factor = match m.get("factor").and_then(|v| v.as_f64()) {
        Some(x) => x,
        None => c.float("max_position_embeddings")?.unwrap_or(omax) / omax,
    };
    let attention_factor = match m.get("attention_factor").and_then(|v| v.as_f64()) {
        Some(a) => a,
        None if factor <= 1.0 => 1.0,
        None => (1.0 + factor.ln() / omax.ln()).sqrt(),
    };
    Ok(RopeScaling::LongRope {
        short_factor: list("short_factor")?,
        long_factor: list("long_factor")?,
        original_max_position_embeddings: omax,
        attention_factor,
    })
}

/// YaRN's settings, its attention factor resolved as transformers resolves it.
fn yarn(c: &Cfg, m: &serde_json::Map<String, Value>, omax: f64) -> Result<RopeScaling> {
    let f = |k: &str| m.get(k).and_then(|v| v.as_f64()).filter(|v| *v != 0.0);
    let factor = match m.get("factor").and_then(|v| v.as_f64()) {
        Some(x) => x,
        None => c.float("max_position_embeddings")?.unwrap_or(omax) / omax,
    };
    let mscale = |scale: f64, m: f64| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * m * scale.ln() + 1.0
        }
    };
    let attention_factor = match (f("attention_factor"), f("mscale"), f("mscale_all_dim")) {
        (Some(a), _, _) => a,
        (None, Some(ms), Some(all)) => mscale(factor, ms) / mscale(factor, all),
        _ => mscale(factor, 1.0),
    };
    let truncate = match m.get("truncate") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(bad(
                &c.what,
                "rope_parameters.truncate",
                v,
                "should be true or false",
            ))
        }
    };
    Ok(RopeScaling::Yarn {
        factor,
        original_max_position_embeddings: omax,
        beta_fast: f("beta_fast").unwrap_or(32.0),
        beta_slow: f("beta_slow").unwrap_or(1.0),
        truncate,
        attention_factor,
    })
}

/// Dropout keys must be 0: pzt applies no dropout to a pretrained model.
pub fn no_dropout(c: &Cfg, keys: &[&str]) -> Result<()> {
    for k in keys {
        c.only(
            k,
            &[Value::from(0.0), Value::from(0)],
            "dropout is not applied when loading a pretrained model",
        )?;
    }
    Ok(())
}

/// An activation function by its transformers name.
pub fn act(c: &Cfg, key: &str, v: &str) -> Result<Activation> {
    Ok(match v {
        "silu" | "swish" => Activation::Silu,
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        "relu" => Activation::Relu,
        other => {
            return Err(bad(
                &c.what,
                key,
                &Value::String(other.into()),
                "unsupported activation",
            ))
        }
    })
}

/// Which of `n` layers use sliding attention: as `layer_types` lists them (`sliding_attention`
/// or `full_attention`), or, when the config has no `layer_types`, as `default` says.
pub fn sliding_layers(c: &Cfg, n: usize, default: impl Fn(usize) -> bool) -> Result<Vec<bool>> {
    let types: Option<Vec<Option<String>>> = c
        .get("layer_types")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().map(|x| x.as_str().map(String::from)).collect());
    (0..n)
        .map(|i| match &types {
            None => Ok(default(i)),
            Some(t) => match t.get(i).and_then(|x| x.as_deref()) {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                other => Err(c.error(format!("layer_types[{i}] = {other:?} is not supported"))),
            },
        })
        .collect()
}

/// What every family reads, for the family's converter to complete: the decoder config, the
/// attention window of each layer, and the rotary embedding.
pub struct Shared {
    pub decoder: DecoderConfig,
    /// Each layer's sliding window (`None`: full attention).
    pub window: Vec<Option<i64>>,
    /// Gemma's `x * (1 + w)` RMSNorm.
    pub norm_plus_one: bool,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// `partial_rotary_factor`: a family that rotates part of each head takes it.
    pub partial: Option<f64>,
    /// The rotary embedding of sliding layers, when the config gives one.
    pub sliding_rope: Option<(f64, Option<RopeScaling>)>,
    /// Whether sliding layers use `sliding_rope` (Gemma 3).
    pub sliding_layers_use_local_rope: bool,
    /// Each layer's RoPE: false for a layer without (NoPE, SmolLM3).
    pub rope: Vec<bool>,
}

/// Keys read here for every family, beyond [`IGNORABLE`].
const SHARED_KEYS: [&str; 8] = [
    "model_type",
    "dtype",
    "torch_dtype",
    "label2id",
    "sliding_window_pattern",
    "rope_parameters",
    "rope_scaling",
    "rope_theta",
];

/// Parses a config.json text.
pub fn parse(text: &str, path: &str) -> Result<Arch> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::bad_file(path, format!("invalid JSON: {e}")))?;
    if let Some(text) = multimodal_text(&v, path)? {
        let mut arch = parse_value(&text, path)?;
        arch.multimodal = true;
        return Ok(arch);
    }
    parse_value(&v, path)
}

/// `Gemma3TextConfig`'s defaults, for the keys a multimodal config's sparse `text_config`
/// leaves out (transformers fills them from the class).
const GEMMA3_TEXT_DEFAULTS: &str = r#"{
  "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
  "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
  "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
  "query_pre_attn_scalar": 256, "sliding_window": 4096, "rope_theta": 1000000.0,
  "rope_local_base_freq": 10000.0, "attention_bias": false, "sliding_window_pattern": 6
}"#;

/// The language model's config of a multimodal `gemma3` checkpoint: its `text_config` over
/// `Gemma3TextConfig`'s defaults, with the top level's dtype, end tokens and tying. None for
/// any other config. The vision settings beside it are not read.
pub(super) fn multimodal_text(v: &Value, path: &str) -> Result<Option<Value>> {
    let (Some("gemma3"), Some(text)) = (
        v.get("model_type").and_then(|t| t.as_str()),
        v.get("text_config"),
    ) else {
        return Ok(None);
    };
    let text = text
        .as_object()
        .ok_or_else(|| Error::bad_file(path, "`text_config` should be an object"))?;
    let mut out: serde_json::Map<String, Value> =
        serde_json::from_str(GEMMA3_TEXT_DEFAULTS).unwrap_or_default();
    if text.contains_key("rope_parameters") {
        // transformers 5 states the whole RoPE there.
        out.remove("rope_theta");
        out.remove("rope_local_base_freq");
    }
    if text.contains_key("layer_types") {
        out.remove("sliding_window_pattern");
    }
    for (k, x) in text {
        out.insert(k.clone(), x.clone());
    }
    for k in [
        "dtype",
        "torch_dtype",
        "eos_token_id",
        "tie_word_embeddings",
    ] {
        if let Some(x) = v.get(k) {
            out.insert(k.to_string(), x.clone());
        }
    }
    out.insert("model_type".into(), Value::from("gemma3_text"));
    Ok(Some(Value::Object(out)))
}

/// Parses a config.json value.
fn parse_value(v: &Value, path: &str) -> Result<Arch> {
    let map = v
        .as_object()
        .ok_or_else(|| Error::bad_file(path, "not a JSON object"))?;
    let c = Cfg {
        map,
        used: RefCell::new(BTreeSet::new()),
        what: path.to_string(),
    };
    let model_type = match c.get("model_type") {
        None => return Err(c.error("`model_type` is missing")),
        Some(v) => v
            .as_str()
            .ok_or_else(|| c.error(format!("`model_type` = {v} should be a string")))?
            .to_string(),
    };
    let conv = families::by_model_type(&model_type).ok_or_else(|| {
        let known: Vec<&str> = families::ALL.iter().map(|f| f.model_type).collect();
        c.error(format!(
            "model_type `{model_type}` is not supported (supported: {})",
            known.join(", ")
        ))
    })?;
    let mut s = shared(&c, conv)?;
    (conv.convert)(&c, &mut s)?;
    if let Some(p) = s.partial.filter(|p| *p != 1.0) {
        return Err(c.error(format!("`rope_parameters.partial_rotary_factor` = {p} is not supported for {model_type} (only GPT-NeoX, Phi-2, Phi-3 and GLM-4 rotate part of each head)")));
    }
    let Shared {
        decoder: mut d,
        window,
        norm_plus_one,
        rope_theta,
        rope_scaling,
        sliding_rope,
        sliding_layers_use_local_rope: local,
        rope,
        ..
    } = s;
    d.layers = window
        .iter()
        .zip(&rope)
        .map(|(w, &rope)| {
            let (theta, scaling) = match (w, &sliding_rope) {
                (Some(_), Some((t, s))) if local => (*t, s.clone()),
                _ => (rope_theta, rope_scaling.clone()),
            };
            LayerAttention {
                window: *w,
                rope_theta: theta,
                rope_scaling: scaling,
                rope,
            }
        })
        .collect();
    crate::layers::attention::check_heads(d.num_heads, d.num_kv_heads)
        .map_err(|m| c.error(format!("num_attention_heads and num_key_value_heads: {m}")))?;
    d.check().map_err(|m| c.error(m))?;
    let (eos, dtype) = (eos(&c), dtype(&c)?);
    let mut ign: Vec<&str> = IGNORABLE.to_vec();
    ign.extend(SHARED_KEYS);
    ign.extend(conv.ignored);
    c.finish(&ign)?;
    Ok(Arch {
        family: conv.family,
        model_type,
        decoder: d,
        norm_plus_one,
        eos,
        dtype,
        multimodal: false,
    })
}

fn dtype(c: &Cfg) -> Result<tch::Kind> {
    let name = c
        .string("dtype")
        .or_else(|| c.string("torch_dtype"))
        .unwrap_or("float32");
    crate::base::dtype::from_name(name)
        .filter(|k| matches!(k, tch::Kind::Float | tch::Kind::BFloat16 | tch::Kind::Half))
        .ok_or_else(|| c.error(format!("dtype `{name}` is not supported")))
}

fn eos(c: &Cfg) -> Vec<i64> {
    match c.get("eos_token_id") {
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_i64()).collect(),
        Some(v) => v.as_i64().into_iter().collect(),
        None => vec![],
    }
}

/// The sizes, the settings that must be harmless, and the rotary embedding.
fn shared(c: &Cfg, conv: &Converter) -> Result<Shared> {
    let vocab = c.req_int("vocab_size")?;
    let d_model = c.req_int("hidden_size")?;
    let layers = c.req_int("num_hidden_layers")?;
    let max = crate::models::decoder::MAX_LAYERS;
    if !(1..=max).contains(&layers) {
        return Err(c.error(format!(
            "`num_hidden_layers` must be 1 to {max}, got {layers}"
        )));
    }
    let heads = c.req_int("num_attention_heads")?;
    let kv_heads = c.int("num_key_value_heads")?.unwrap_or(heads);
    let head_dim = c.int("head_dim")?.unwrap_or(d_model / heads.max(1));
    let ffn = c.req_int("intermediate_size")?;
    for (k, v) in [
        ("vocab_size", vocab),
        ("hidden_size", d_model),
        ("num_attention_heads", heads),
        ("intermediate_size", ffn),
    ] {
        if v < 1 {
            return Err(c.error(format!("`{k}` must be at least 1, got {v}")));
        }
    }
    // Read here so that a bad dtype is reported before the rest, as the keys are read.
    dtype(c)?;
    let tied = c
        .boolean("tie_word_embeddings")?
        .unwrap_or(conv.tied_by_default);
    no_dropout(c, &["attention_dropout", "hidden_dropout"])?;
    c.only(
        "pretraining_tp",
        &[Value::from(1)],
        "tensor-parallel slicing of the MLP is not implemented",
    )?;
    c.only(
        "use_bidirectional_attention",
        &[Value::Bool(false)],
        "bidirectional attention is not implemented",
    )?;
    let mut d = DecoderConfig::llama(vocab, d_model, 0, (heads, kv_heads, head_dim), ffn);
    d.query_scale = Some(1.0 / (head_dim as f64).sqrt());
    d.tie_embeddings = tied;
    let (rope_theta, rope_scaling, partial, sliding_rope) = rope(c)?;
    Ok(Shared {
        decoder: d,
        window: vec![None; layers as usize],
        rope: vec![true; layers as usize],
        norm_plus_one: false,
        rope_theta,
        rope_scaling,
        partial,
        sliding_rope,
        sliding_layers_use_local_rope: false,
    })
}

type Rope = (
    f64,
    Option<RopeScaling>,
    Option<f64>,
    Option<(f64, Option<RopeScaling>)>,
);

/// The rotary embedding in either layout: `rope_theta` + `rope_scaling`, or `rope_parameters`
/// (one table, or one per layer type); and Gemma 3's `rope_local_base_freq`.
fn rope(c: &Cfg) -> Result<Rope> {
    let mut theta = c.float("rope_theta")?.unwrap_or(10_000.0);
    let mut scaling = None;
    let mut partial = None;
    let mut local: Option<(f64, Option<RopeScaling>)> = None;
    if let Some(s) = c.get("rope_scaling") {
        let mut s = s.clone();
        if let Some(m) = s.as_object_mut() {
            m.insert("rope_theta".into(), Value::from(theta));
        }
        (theta, scaling, _) = parse_rope(c, &s)?;
    }
    if let Some(rp) = c.get("rope_parameters") {
        let per_type = rp.get("full_attention").is_some() || rp.get("sliding_attention").is_some();
        if per_type {
            let full = rp
                .get("full_attention")
                .ok_or_else(|| c.error("rope_parameters lacks `full_attention`"))?;
            (theta, scaling, _) = parse_rope(c, full)?;
            if let Some(sl) = rp.get("sliding_attention") {
                let (t, sc, _) = parse_rope(c, sl)?;
                local = Some((t, sc));
            }
        } else {
            (theta, scaling, partial) = parse_rope(c, rp)?;
        }
    }
    if let Some(lb) = c.float("rope_local_base_freq")? {
        local = Some((lb, None));
    }
    Ok((theta, scaling, partial, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_multimodal_gemma3_config_takes_the_text_defaults() -> Result<()> {
        // gemma-3-4b-it's config.json, its vision settings cut short.
        let text = r#"{"architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
            "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
            "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
            "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                "sliding_window": 1024},
            "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
            "vision_config": {"hidden_size": 1152, "model_type": "siglip_vision_model"}}"#;
        let a = parse(text, "config.json")?;
        assert!(a.multimodal);
        assert_eq!(a.dtype, tch::Kind::BFloat16);
        assert_eq!(a.eos, vec![1, 106]);
        let d = &a.decoder;
        assert_eq!(
            (d.vocab_size, d.d_model, d.mlp_hidden),
            (262208, 2560, 10240)
        );
        assert_eq!((d.num_heads, d.num_kv_heads, d.head_dim), (8, 4, 256));
        assert_eq!(d.layers.len(), 34);
        // Every 6th layer global, with the scaled 1e6 base; the others local, 10000, window 1024.
        let global = &d.layers[5];
        assert_eq!((global.window, global.rope_theta), (None, 1_000_000.0));
        assert!(
            matches!(global.rope_scaling, Some(RopeScaling::Linear { factor }) if factor == 8.0)
        );
        let local = &d.layers[0];
        assert_eq!((local.window, local.rope_theta), (Some(1024), 10_000.0));
        assert!(local.rope_scaling.is_none());
        assert!(d.tie_embeddings && d.qk_norm);
        Ok(())
    }

    /// A Phi-2-shaped config in the older layout (top-level `partial_rotary_factor`).
    const PHI2: &str = r#"{"model_type": "phi", "vocab_size": 51200, "hidden_size": 2560,
        "intermediate_size": 10240, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 32, "hidden_act": "gelu_new", "layer_norm_eps": 1e-05,
        "partial_rotary_factor": 0.4, "qk_layernorm": false, "resid_pdrop": 0.1,
        "embd_pdrop": 0.0, "attention_dropout": 0.0, "rope_scaling": null,
        "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "float16"}"#;

    #[test]
    fn phi2_rotates_its_partial_factor_with_one_norm_and_a_head_bias() -> Result<()> {
        let d = parse(PHI2, "config.json")?.decoder;
        assert_eq!(d.rotary_dims, Some(32));
        assert!(d.parallel_residual && d.shared_norm && d.lm_head_bias && d.layer_norm_bias);
        assert!(!d.gated_mlp && d.mlp_bias && d.qkv_bias && d.output_bias && !d.qk_norm);
        assert_eq!(d.activation, Activation::GeluTanh);
        // microsoft/phi-2's `resid_pdrop`: dropout at the end of both branches in training.
        assert_eq!(d.dropout, 0.1);
        // Without a factor Phi rotates half of each head, as transformers does.
        let half = PHI2.replace("\"partial_rotary_factor\": 0.4, ", "");
        assert_eq!(parse(&half, "config.json")?.decoder.rotary_dims, Some(40));
        for (from, to, want) in [
            (
                "\"embd_pdrop\": 0.0",
                "\"embd_pdrop\": 0.1",
                "`embd_pdrop` = 0.1",
            ),
            ("0.4", "0.0", "`partial_rotary_factor` = 0"),
        ] {
            let e = parse(&PHI2.replace(from, to), "config.json")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(want), "{e}");
        }
        Ok(())
    }

    #[test]
    fn cohere_defaults_its_rope_base_logit_scale_and_tying() -> Result<()> {
        let text = r#"{"model_type": "cohere", "vocab_size": 256000, "hidden_size": 8192,
            "intermediate_size": 22528, "num_hidden_layers": 40, "num_attention_heads": 64,
            "num_key_value_heads": 8, "use_qk_norm": true, "model_max_length": 131072}"#;
        let d = parse(text, "config.json")?.decoder;
        assert_eq!(d.layers[0].rope_theta, 500_000.0);
        assert_eq!(d.logit_scale, Some(0.0625));
        assert!(d.tie_embeddings && d.rope_interleaved && d.rotary_dims.is_none());
        assert!(d.layer_norm && !d.layer_norm_bias && d.shared_norm && d.gated_mlp);
        assert!(d.qk_norm && d.qk_norm_per_head && !d.qkv_bias);
        // A base the config names is kept.
        let named = text.replace(
            "\"use_qk_norm\"",
            "\"rope_theta\": 8000000.0, \"use_qk_norm\"",
        );
        assert_eq!(
            parse(&named, "config.json")?.decoder.layers[0].rope_theta,
            8e6
        );
        Ok(())
    }
}
