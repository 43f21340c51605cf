//! HuggingFace `config.json` -> [`Arch`] (a [`DecoderConfig`] and what the family's checkpoint
//! layout needs), for Llama, Mistral, Gemma 1/2/3 and GPT-NeoX, in
//! both layouts found in the wild: the older one (top-level `rope_theta`, `rope_scaling`,
//! `torch_dtype`, NeoX's `rotary_pct` / `rotary_emb_base`, Gemma 3's `rope_local_base_freq`)
//! and the newer one (`rope_parameters`, `dtype`, per-layer-type `rope_parameters`).
//!
//! Every key is either used, known not to change the computation, or rejected with an error
//! naming the key and its value: nothing is silently ignored.

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
}

struct Cfg<'a> {
    map: &'a Map<String, Value>,
    used: RefCell<BTreeSet<String>>,
    what: String,
}

fn bad(what: &str, key: &str, v: &Value, why: &str) -> Error {
    Error::bad_file(what, format!("`{key}` = {v} is not supported: {why}"))
}

impl<'a> Cfg<'a> {
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.used.borrow_mut().insert(k.to_string());
        self.map.get(k).filter(|v| !v.is_null())
    }
    fn int(&self, k: &str) -> Result<Option<i64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| {
                Error::bad_file(&self.what, format!("`{k}` = {v} should be an integer"))
            }),
        }
    }
    fn req_int(&self, k: &str) -> Result<i64> {
        self.int(k)?
            .ok_or_else(|| Error::bad_file(&self.what, format!("`{k}` is missing")))
    }
    fn float(&self, k: &str) -> Result<Option<f64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                Error::bad_file(&self.what, format!("`{k}` = {v} should be a number"))
            }),
        }
    }
    fn boolean(&self, k: &str) -> Result<Option<bool>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| {
                Error::bad_file(&self.what, format!("`{k}` = {v} should be a boolean"))
            }),
        }
    }
    fn string(&self, k: &str) -> Option<&'a str> {
        self.get(k).and_then(|v| v.as_str())
    }
    /// Requires a key, if present, to have one of the harmless values.
    fn only(&self, k: &str, ok: &[Value], why: &str) -> Result<()> {
        if let Some(v) = self.get(k) {
            if !ok.contains(v) {
                return Err(bad(&self.what, k, v, why));
            }
        }
        Ok(())
    }
    fn finish(&self, ignorable: &[&str]) -> Result<()> {
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

fn parse_rope(what: &str, rp: &Value) -> Result<(f64, Option<RopeScaling>, Option<f64>)> {
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
    let scaling = match ty {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: need("factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            original_max_position_embeddings: need("original_max_position_embeddings")?,
        }),
        other => {
            return Err(Error::bad_file(
                what,
                format!(
                    "rope_type `{other}` is not supported (supported: default, linear, llama3)"
                ),
            ))
        }
    };
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
    Ok((theta, scaling, partial))
}

fn act(what: &str, key: &str, v: &str) -> Result<Activation> {
    Ok(match v {
        "silu" | "swish" => Activation::Silu,
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        "relu" => Activation::Relu,
        other => {
            return Err(bad(
                what,
                key,
                &Value::String(other.into()),
                "unsupported activation",
            ))
        }
    })
}

/// Parses a config.json text.
pub fn parse(text: &str, path: &str) -> Result<Arch> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::bad_file(path, format!("invalid JSON: {e}")))?;
    let map = v
        .as_object()
        .ok_or_else(|| Error::bad_file(path, "not a JSON object"))?;
    let c = Cfg {
        map,
        used: RefCell::new(BTreeSet::new()),
        what: path.to_string(),
    };
    let model_type = match c.get("model_type") {
        None => return Err(Error::bad_file(path, "`model_type` is missing")),
        Some(v) => v
            .as_str()
            .ok_or_else(|| Error::bad_file(path, format!("`model_type` = {v} should be a string")))?
            .to_string(),
    };
    let family = match model_type.as_str() {
        "llama" => Family::Llama,
        "mistral" => Family::Mistral,
        "gemma" => Family::Gemma,
        "gemma2" => Family::Gemma2,
        "gemma3_text" => Family::Gemma3,
        "gpt_neox" => Family::GptNeox,
        other => return Err(Error::bad_file(path, format!("model_type `{other}` is not supported (supported: llama, mistral, gemma, gemma2, gemma3_text, gpt_neox)"))),
    };
    let vocab = c.req_int("vocab_size")?;
    let d_model = c.req_int("hidden_size")?;
    let layers = c.req_int("num_hidden_layers")?;
    let max = crate::models::decoder::MAX_LAYERS;
    if !(1..=max).contains(&layers) {
        return Err(Error::bad_file(
            path,
            format!("`num_hidden_layers` must be 1 to {max}, got {layers}"),
        ));
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
            return Err(Error::bad_file(
                path,
                format!("`{k}` must be at least 1, got {v}"),
            ));
        }
    }
    let dtype_name = c
        .string("dtype")
        .or_else(|| c.string("torch_dtype"))
        .unwrap_or("float32");
    let dtype = crate::base::dtype::from_name(dtype_name)
        .filter(|k| matches!(k, tch::Kind::Float | tch::Kind::BFloat16 | tch::Kind::Half))
        .ok_or_else(|| Error::bad_file(path, format!("dtype `{dtype_name}` is not supported")))?;
    let eos = match c.get("eos_token_id") {
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_i64()).collect(),
        Some(v) => v.as_i64().into_iter().collect(),
        None => vec![],
    };
    let tied_default = matches!(family, Family::Gemma | Family::Gemma2 | Family::Gemma3);
    let tied = c.boolean("tie_word_embeddings")?.unwrap_or(tied_default);
    for k in ["attention_dropout", "hidden_dropout"] {
        c.only(
            k,
            &[Value::from(0.0), Value::from(0)],
            "dropout is not applied when loading a pretrained model",
        )?;
    }
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
    // RoPE.
    let old_theta = c.float("rope_theta")?;
    let old_scaling = c.get("rope_scaling");
    let mut rope_theta = old_theta.unwrap_or(10_000.0);
    let mut rope_scaling = None;
    let mut partial = None;
    let mut local: Option<(f64, Option<RopeScaling>)> = None;
    if let Some(s) = old_scaling {
        let mut s = s.clone();
        if let Some(m) = s.as_object_mut() {
            m.insert("rope_theta".into(), Value::from(rope_theta));
        }
        let (t, sc, _) = parse_rope(path, &s)?;
        rope_theta = t;
        rope_scaling = sc;
    }
    if let Some(rp) = c.get("rope_parameters") {
        let per_type = rp.get("full_attention").is_some() || rp.get("sliding_attention").is_some();
        if per_type {
            let full = rp
                .get("full_attention")
                .ok_or_else(|| Error::bad_file(path, "rope_parameters lacks `full_attention`"))?;
            let (t, sc, _) = parse_rope(path, full)?;
            rope_theta = t;
            rope_scaling = sc;
            if let Some(sl) = rp.get("sliding_attention") {
                let (t, sc, _) = parse_rope(path, sl)?;
                local = Some((t, sc));
            }
        } else {
            let (t, sc, p) = parse_rope(path, rp)?;
            rope_theta = t;
            rope_scaling = sc;
            partial = p;
        }
    }
    if let Some(lb) = c.float("rope_local_base_freq")? {
        local = Some((lb, None));
    }
    let mut d = DecoderConfig::llama(vocab, d_model, 0, (heads, kv_heads, head_dim), ffn);
    d.query_scale = Some(1.0 / (head_dim as f64).sqrt());
    d.tie_embeddings = tied;
    let mut norm_plus_one = false;
    let mut window: Vec<Option<i64>> = vec![None; layers as usize];
    match family {
        Family::Llama | Family::Mistral => {
            d.norm_eps = c.float("rms_norm_eps")?.unwrap_or(1e-6);
            d.activation = act(path, "hidden_act", c.string("hidden_act").unwrap_or("silu"))?;
            let ab = c.boolean("attention_bias")?.unwrap_or(false);
            d.qkv_bias = ab;
            d.output_bias = ab;
            d.mlp_bias = c.boolean("mlp_bias")?.unwrap_or(false);
            if family == Family::Mistral {
                if let Some(w) = c.int("sliding_window")? {
                    window = vec![Some(w); layers as usize];
                }
            }
        }
        Family::Gemma | Family::Gemma2 | Family::Gemma3 => {
            d.norm_eps = c.float("rms_norm_eps")?.unwrap_or(1e-6);
            norm_plus_one = true;
            let a = c
                .string("hidden_activation")
                .or_else(|| c.string("hidden_act"))
                .unwrap_or("gelu_pytorch_tanh");
            let _ = c.get("hidden_act");
            d.activation = act(path, "hidden_activation", a)?;
            if family == Family::Gemma && d.activation == Activation::Gelu {
                // transformers maps Gemma 1's legacy `gelu` to the tanh approximation.
                d.activation = Activation::GeluTanh;
            }
            let ab = c.boolean("attention_bias")?.unwrap_or(false);
            d.qkv_bias = ab;
            d.output_bias = ab;
            d.embed_scale = Some((d_model as f64).sqrt());
            if family != Family::Gemma {
                d.sandwich_norms = true;
                if let Some(q) = c.float("query_pre_attn_scalar")? {
                    d.query_scale = Some(q.powf(-0.5));
                }
                d.attn_softcap = c.float("attn_logit_softcapping")?;
                d.final_softcap = c.float("final_logit_softcapping")?;
                let sw = c.int("sliding_window")?;
                let types: Option<Vec<String>> =
                    c.get("layer_types").and_then(|v| v.as_array()).map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    });
                let pattern = c.int("sliding_window_pattern")?;
                for (i, w) in window.iter_mut().enumerate() {
                    let sliding = match (&types, pattern) {
                        (Some(t), _) => match t.get(i).map(|s| s.as_str()) {
                            Some("sliding_attention") => true,
                            Some("full_attention") => false,
                            other => {
                                return Err(Error::bad_file(
                                    path,
                                    format!("layer_types[{i}] = {other:?} is not supported"),
                                ))
                            }
                        },
                        (None, Some(p)) => (i as i64 + 1) % p != 0,
                        (None, None) if family == Family::Gemma2 => i % 2 == 0,
                        (None, None) => (i as i64 + 1) % 6 != 0,
                    };
                    if sliding {
                        *w = Some(sw.ok_or_else(|| {
                            Error::bad_file(path, "sliding layers need `sliding_window`")
                        })?);
                    }
                }
            }
            if family == Family::Gemma3 {
                d.qk_norm = true;
                if local.is_none() {
                    local = Some((10_000.0, None));
                }
            }
        }
        Family::GptNeox => {
            d.layer_norm = true;
            d.norm_eps = c.float("layer_norm_eps")?.unwrap_or(1e-5);
            d.gated_mlp = false;
            d.activation = act(path, "hidden_act", c.string("hidden_act").unwrap_or("gelu"))?;
            let ab = c.boolean("attention_bias")?.unwrap_or(true);
            d.qkv_bias = ab;
            d.output_bias = ab;
            d.mlp_bias = true;
            d.parallel_residual = c.boolean("use_parallel_residual")?.unwrap_or(true);
            if let Some(base) = c.float("rotary_emb_base")? {
                rope_theta = base;
            }
            let pct = c.float("rotary_pct")?.or(partial).unwrap_or(1.0);
            let dims = ((head_dim as f64) * pct) as i64;
            if dims < head_dim {
                d.rotary_dims = Some(dims);
            }
        }
    }
    if family != Family::GptNeox {
        if let Some(p) = partial.filter(|p| *p != 1.0) {
            return Err(Error::bad_file(
                path,
                format!("`rope_parameters.partial_rotary_factor` = {p} is not supported for {model_type} (only GPT-NeoX rotates part of each head)"
            )));
        }
    }
    d.layers = window
        .iter()
        .map(|w| {
            let (theta, scaling) = match (w, &local) {
                (Some(_), Some((t, s))) if family == Family::Gemma3 => (*t, s.clone()),
                _ => (rope_theta, rope_scaling.clone()),
            };
            LayerAttention {
                window: *w,
                rope_theta: theta,
                rope_scaling: scaling,
            }
        })
        .collect();
    if d.num_kv_heads < 1 || d.num_heads % d.num_kv_heads != 0 {
        return Err(Error::bad_file(
            path,
            format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                d.num_heads, d.num_kv_heads
            ),
        ));
    }
    d.check().map_err(|m| Error::bad_file(path, m))?;
    let mut ign: Vec<&str> = IGNORABLE.to_vec();
    ign.extend([
        "model_type",
        "dtype",
        "torch_dtype",
        "label2id",
        "sliding_window_pattern",
        "rope_parameters",
        "rope_scaling",
        "rope_theta",
    ]);
    if family == Family::Mistral || family == Family::Llama {
        ign.push("head_dim");
    }
    c.finish(&ign)?;
    Ok(Arch {
        family,
        model_type,
        decoder: d,
        norm_plus_one,
        eos,
        dtype,
    })
}
