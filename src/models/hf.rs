//! Pretrained HuggingFace models: a llama-like builder shared by Llama, Mistral and Gemma 1/2/3
//! (as Penzai's `llamalike_common`), GPT-NeoX reusing its parts, and loading / exporting
//! `model.safetensors` (or shards with `model.safetensors.index.json`, memory-mapped).
//!
//! The tree is ordinary combinators (so selectors, patches and `pzt show` work on it):
//!
//! ```text
//! Sequential
//!   embed: EmbeddingLookup                 (+ embed_scale: Rescale(sqrt(d)) for Gemma)
//!   blocks: Sequential[0..L]
//!     i: Sequential                         serial residual (Llama, Mistral, Gemma, NeoX serial)
//!       attention: Residual(delta: Sequential[norm, attn, post_norm?])
//!       mlp:       Residual(delta: Sequential[norm, mlp, post_norm?])
//!     i: BranchAndAddTogether[0: Identity, 1: Sequential[norm, attn], 2: Sequential[norm, mlp]]
//!                                           parallel residual (NeoX)
//!   final_norm
//!   lm_head: Linear | EmbeddingDecode (tied)   (+ final_softcap: TanhSoftCap for Gemma 2)
//! ```
//!
//! HF weights are `[out, in]`; pzt's Linear weights are `[input axes..., output axes...]`, so
//! they are transposed and reshaped (query heads `h = kv_head * q_rep + r` for grouped-query
//! attention). Gemma's `(1 + w)` norm scales are stored as `1 + w`. GPT-NeoX's fused QKV
//! weight (per head `[q; k; v]`) is split into the query, key and value projections.

pub use super::hf_config::{parse, Arch, Family, LayerAttn};
use crate::base::{Error, Result, TorchContext};
use crate::layers::attention::{AttentionMask, SelfAttentionConfig};
use crate::layers::embedding::{EmbeddingDecode, EmbeddingLookup};
use crate::layers::grouping::{
    BranchAndAddTogether, BranchAndMultiplyTogether, Residual, Sequential,
};
use crate::layers::linear::{affine, Linear};
use crate::layers::misc::{Elementwise, Identity, Rescale, TanhSoftCap};
use crate::layers::norms::{layer_norm, rms_layer_norm};
use crate::layers::Axes;
use crate::params::{ParamEntry, Parameter};
use crate::tree::{Builder, Node, Scope};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

fn ax(pairs: &[(&str, i64)]) -> Axes {
    pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

impl Arch {
    fn emb(&self) -> Axes {
        ax(&[("embedding", self.d_model)])
    }

    /// The query axes: `{heads, projection}` or `{kv_heads, q_rep, projection}`.
    pub fn q_axes(&self) -> Axes {
        if self.kv_heads == self.heads {
            ax(&[("heads", self.heads), ("projection", self.head_dim)])
        } else {
            ax(&[
                ("kv_heads", self.kv_heads),
                ("q_rep", self.heads / self.kv_heads),
                ("projection", self.head_dim),
            ])
        }
    }

    /// The key/value axes.
    pub fn kv_axes(&self) -> Axes {
        if self.kv_heads == self.heads {
            ax(&[("heads", self.heads), ("projection", self.head_dim)])
        } else {
            ax(&[("kv_heads", self.kv_heads), ("projection", self.head_dim)])
        }
    }

    fn norm(&self, s: &Scope<'_>) -> Result<Node> {
        if self.layer_norm {
            layer_norm(s, self.emb(), self.norm_eps)
        } else {
            rms_layer_norm(s, self.emb(), self.norm_eps)
        }
    }

    fn linear(&self, s: &Scope<'_>, i: Axes, o: Axes, bias: bool) -> Result<Node> {
        if bias {
            affine(s, i, o)
        } else {
            Linear::new(i, o).build(s, None)
        }
    }

    fn mlp(&self, s: &Scope<'_>) -> Result<Node> {
        let emb = self.emb();
        let hid = ax(&[("neurons", self.ffn)]);
        let act = Node::new(Elementwise { function: self.act });
        if self.gated {
            let gate = Sequential::named(vec![
                (
                    "linear".into(),
                    self.linear(&s.pp("gate"), emb.clone(), hid.clone(), self.mlp_bias)?,
                ),
                ("act".into(), act),
            ]);
            let up = self.linear(&s.pp("up"), emb.clone(), hid.clone(), self.mlp_bias)?;
            Ok(Sequential::named(vec![
                (
                    "gate_up".into(),
                    BranchAndMultiplyTogether::build(vec![gate, up]),
                ),
                (
                    "down".into(),
                    self.linear(&s.pp("down"), hid, emb, self.mlp_bias)?,
                ),
            ]))
        } else {
            Ok(Sequential::named(vec![
                (
                    "up".into(),
                    self.linear(&s.pp("up"), emb.clone(), hid.clone(), self.mlp_bias)?,
                ),
                ("act".into(), act),
                (
                    "down".into(),
                    self.linear(&s.pp("down"), hid, emb, self.mlp_bias)?,
                ),
            ]))
        }
    }

    fn attention(&self, s: &Scope<'_>, la: &LayerAttn) -> Result<Node> {
        let mut c = SelfAttentionConfig::new(self.d_model, self.heads, self.head_dim);
        c.num_kv_heads = self.kv_heads;
        c.rope_wavelength = Some(la.rope_theta);
        c.rope_scaling = la.rope_scaling.clone();
        c.rotary_dims = self.rotary_dims;
        c.query_scale = Some(self.query_scale);
        c.qkv_bias = self.qkv_bias;
        c.output_bias = self.out_bias;
        c.qk_norm_eps = if self.qk_norm {
            Some(self.norm_eps)
        } else {
            None
        };
        c.logit_softcap = self.attn_softcap;
        c.mask = match la.window {
            Some(w) => AttentionMask::SlidingWindow(w),
            None => AttentionMask::Causal,
        };
        c.build(s)
    }

    /// Builds the model (parameters from `b`: slots, or values from its seed).
    pub fn build(&self, b: &Builder) -> Result<Node> {
        let root = b.root();
        let embed = Node::build(
            EmbeddingLookup {
                vocab_axis: "vocab".into(),
                vocab_size: self.vocab,
                embedding_axes: self.emb(),
                init: None,
            },
            &root.pp("embed"),
        )?;
        let mut top = vec![("embed".to_string(), embed)];
        if let Some(sc) = self.embed_scale {
            top.push(("embed_scale".into(), Node::new(Rescale { by: sc })));
        }
        let mut blocks = vec![];
        for (i, la) in self.layer_attn.iter().enumerate() {
            let bs = root.pp("blocks").pp(i.to_string());
            let (an, a) = (
                self.norm(&bs.pp("attention").pp("norm"))?,
                self.attention(&bs.pp("attention").pp("attn"), la)?,
            );
            let (mn, m) = (
                self.norm(&bs.pp("mlp").pp("norm"))?,
                self.mlp(&bs.pp("mlp").pp("mlp"))?,
            );
            let block = if self.parallel_residual {
                BranchAndAddTogether::build(vec![
                    Node::new(Identity {}),
                    Sequential::named(vec![("norm".into(), an), ("attn".into(), a)]),
                    Sequential::named(vec![("norm".into(), mn), ("mlp".into(), m)]),
                ])
            } else {
                let mut ad = vec![("norm".to_string(), an), ("attn".to_string(), a)];
                let mut md = vec![("norm".to_string(), mn), ("mlp".to_string(), m)];
                if self.sandwich_norms {
                    ad.push((
                        "post_norm".into(),
                        self.norm(&bs.pp("attention").pp("post_norm"))?,
                    ));
                    md.push((
                        "post_norm".into(),
                        self.norm(&bs.pp("mlp").pp("post_norm"))?,
                    ));
                }
                Sequential::named(vec![
                    ("attention".into(), Residual::build(Sequential::named(ad))),
                    ("mlp".into(), Residual::build(Sequential::named(md))),
                ])
            };
            blocks.push(block);
        }
        top.push(("blocks".into(), Sequential::new(blocks)));
        top.push(("final_norm".into(), self.norm(&root.pp("final_norm"))?));
        let head = if self.tied {
            let mut labels = BTreeMap::new();
            labels.insert("embeddings".to_string(), "embed.embeddings".to_string());
            Node::build_arc(
                std::sync::Arc::new(EmbeddingDecode {
                    vocab_axis: "vocab".into(),
                    vocab_size: self.vocab,
                    embedding_axes: self.emb(),
                    init: None,
                }),
                &root.pp("lm_head"),
                &labels,
            )?
        } else {
            Linear::new(self.emb(), ax(&[("vocab", self.vocab)]))
                .build(&root.pp("lm_head"), None)?
        };
        top.push(("lm_head".into(), head));
        if let Some(cap) = self.final_softcap {
            top.push(("final_softcap".into(), Node::new(TanhSoftCap { cap })));
        }
        Ok(Sequential::named(top))
    }
}

/// How an HF tensor becomes a pzt parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// Same layout.
    Same,
    /// `[out, in]` (with `in` elements per row) -> transpose -> reshape to the parameter's
    /// shape.
    Linear(i64),
    /// Reshape only (biases).
    Reshape,
    /// Gemma norm scale: `1 + w`.
    PlusOne,
    /// GPT-NeoX fused QKV weight (`which` = 0, 1, 2 for q, k, v).
    QkvWeight(i64),
    /// GPT-NeoX fused QKV bias.
    QkvBias(i64),
}

/// `(pzt label, HF tensor name, transform)` for every parameter of `arch`.
pub fn weight_map(a: &Arch) -> Vec<(String, String, Transform)> {
    let mut v: Vec<(String, String, Transform)> = vec![];
    let mut add = |l: String, h: String, t: Transform| v.push((l, h, t));
    let neox = a.family == Family::GptNeox;
    let (pre, emb) = if neox {
        ("gpt_neox.", "gpt_neox.embed_in.weight")
    } else {
        ("model.", "model.embed_tokens.weight")
    };
    add("embed.embeddings".into(), emb.into(), Transform::Same);
    let norm = |add: &mut dyn FnMut(String, String, Transform), ours: &str, theirs: &str| {
        if a.layer_norm {
            add(
                format!("{ours}.scale.weights"),
                format!("{theirs}.weight"),
                Transform::Same,
            );
            add(
                format!("{ours}.bias.bias"),
                format!("{theirs}.bias"),
                Transform::Same,
            );
        } else {
            add(
                format!("{ours}.scale.weights"),
                format!("{theirs}.weight"),
                if a.norm_plus_one {
                    Transform::PlusOne
                } else {
                    Transform::Same
                },
            );
        }
    };
    let lin = |add: &mut dyn FnMut(String, String, Transform),
               ours: &str,
               theirs: &str,
               bias: bool,
               fan_in: i64| {
        if bias {
            add(
                format!("{ours}.linear.weights"),
                format!("{theirs}.weight"),
                Transform::Linear(fan_in),
            );
            add(
                format!("{ours}.bias.bias"),
                format!("{theirs}.bias"),
                Transform::Reshape,
            );
        } else {
            add(
                format!("{ours}.weights"),
                format!("{theirs}.weight"),
                Transform::Linear(fan_in),
            );
        }
    };
    let (d, hd, f) = (a.d_model, a.heads * a.head_dim, a.ffn);
    for i in 0..a.layers {
        let b = format!("blocks.{i}");
        let h = format!("{pre}layers.{i}");
        let at = format!("{b}.attention.attn");
        norm(
            &mut add,
            &format!("{b}.attention.norm"),
            &format!("{h}.input_layernorm"),
        );
        if neox {
            for (k, name) in ["query", "key", "value"].iter().enumerate() {
                add(
                    format!("{at}.{name}.linear.weights"),
                    format!("{h}.attention.query_key_value.weight"),
                    Transform::QkvWeight(k as i64),
                );
                if a.qkv_bias {
                    add(
                        format!("{at}.{name}.bias.bias"),
                        format!("{h}.attention.query_key_value.bias"),
                        Transform::QkvBias(k as i64),
                    );
                }
            }
            add(
                format!("{at}.output.linear.weights"),
                format!("{h}.attention.dense.weight"),
                Transform::Linear(hd),
            );
            if a.out_bias {
                add(
                    format!("{at}.output.bias.bias"),
                    format!("{h}.attention.dense.bias"),
                    Transform::Reshape,
                );
            }
            norm(
                &mut add,
                &format!("{b}.mlp.norm"),
                &format!("{h}.post_attention_layernorm"),
            );
            lin(
                &mut add,
                &format!("{b}.mlp.mlp.up"),
                &format!("{h}.mlp.dense_h_to_4h"),
                true,
                d,
            );
            lin(
                &mut add,
                &format!("{b}.mlp.mlp.down"),
                &format!("{h}.mlp.dense_4h_to_h"),
                true,
                f,
            );
            continue;
        }
        for (name, hf) in [("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")] {
            add(
                format!("{at}.{name}.linear.weights"),
                format!("{h}.self_attn.{hf}.weight"),
                Transform::Linear(d),
            );
            if a.qkv_bias {
                add(
                    format!("{at}.{name}.bias.bias"),
                    format!("{h}.self_attn.{hf}.bias"),
                    Transform::Reshape,
                );
            }
        }
        if a.qk_norm {
            norm(
                &mut add,
                &format!("{at}.query.norm"),
                &format!("{h}.self_attn.q_norm"),
            );
            norm(
                &mut add,
                &format!("{at}.key.norm"),
                &format!("{h}.self_attn.k_norm"),
            );
        }
        add(
            format!("{at}.output.linear.weights"),
            format!("{h}.self_attn.o_proj.weight"),
            Transform::Linear(hd),
        );
        if a.out_bias {
            add(
                format!("{at}.output.bias.bias"),
                format!("{h}.self_attn.o_proj.bias"),
                Transform::Reshape,
            );
        }
        if a.sandwich_norms {
            norm(
                &mut add,
                &format!("{b}.attention.post_norm"),
                &format!("{h}.post_attention_layernorm"),
            );
            norm(
                &mut add,
                &format!("{b}.mlp.norm"),
                &format!("{h}.pre_feedforward_layernorm"),
            );
            norm(
                &mut add,
                &format!("{b}.mlp.post_norm"),
                &format!("{h}.post_feedforward_layernorm"),
            );
        } else {
            norm(
                &mut add,
                &format!("{b}.mlp.norm"),
                &format!("{h}.post_attention_layernorm"),
            );
        }
        let m = format!("{b}.mlp.mlp");
        lin(
            &mut add,
            &format!("{m}.gate"),
            &format!("{h}.mlp.gate_proj"),
            a.mlp_bias,
            d,
        );
        lin(
            &mut add,
            &format!("{m}.up"),
            &format!("{h}.mlp.up_proj"),
            a.mlp_bias,
            d,
        );
        lin(
            &mut add,
            &format!("{m}.down"),
            &format!("{h}.mlp.down_proj"),
            a.mlp_bias,
            f,
        );
    }
    norm(
        &mut add,
        "final_norm",
        if neox {
            "gpt_neox.final_layer_norm"
        } else {
            "model.norm"
        },
    );
    if !a.tied {
        add(
            "lm_head.weights".into(),
            if neox {
                "embed_out.weight"
            } else {
                "lm_head.weight"
            }
            .into(),
            Transform::Linear(d),
        );
    }
    v
}

/// Applies a transform, producing a tensor of `shape`.
pub fn to_pzt(t: &Tensor, tr: Transform, shape: &[i64], a: &Arch) -> Result<Tensor> {
    let (h, d) = (a.heads, a.head_dim);
    let r = match tr {
        Transform::Same => t.shallow_clone(),
        Transform::Linear(_) => t
            .f_transpose(0, 1)
            .and_then(|x| x.f_contiguous())
            .and_then(|x| x.f_reshape(shape))
            .ctx("transpose weight")?,
        Transform::Reshape => t.f_reshape(shape).ctx("reshape")?,
        Transform::PlusOne => t.f_add_scalar(1.0).ctx("norm scale")?,
        Transform::QkvWeight(k) => t
            .f_reshape([h, 3, d, -1])
            .and_then(|x| x.f_select(1, k))
            .and_then(|x| x.f_permute([2, 0, 1]))
            .and_then(|x| x.f_contiguous())
            .and_then(|x| x.f_reshape(shape))
            .ctx("split fused QKV")?,
        Transform::QkvBias(k) => t
            .f_reshape([h, 3, d])
            .and_then(|x| x.f_select(1, k))
            .and_then(|x| x.f_contiguous())
            .and_then(|x| x.f_reshape(shape))
            .ctx("split fused QKV bias")?,
    };
    Ok(r)
}

/// The HF shape a transform expects, given the parameter's shape (for messages and export).
fn hf_shape(tr: Transform, shape: &[i64], a: &Arch) -> Vec<i64> {
    let n: i64 = shape.iter().product();
    match tr {
        Transform::Same | Transform::PlusOne => shape.to_vec(),
        Transform::Linear(i) => vec![n / i.max(1), i],
        Transform::Reshape => vec![n],
        Transform::QkvWeight(_) => vec![3 * a.heads * a.head_dim, a.d_model],
        Transform::QkvBias(_) => vec![3 * a.heads * a.head_dim],
    }
}

fn st_kind(d: safetensors::Dtype) -> Result<Kind> {
    Ok(match d {
        safetensors::Dtype::F32 => Kind::Float,
        safetensors::Dtype::F16 => Kind::Half,
        safetensors::Dtype::BF16 => Kind::BFloat16,
        safetensors::Dtype::F64 => Kind::Double,
        safetensors::Dtype::I64 => Kind::Int64,
        other => {
            return Err(Error::Config(format!(
                "safetensors dtype {other:?} is not supported"
            )))
        }
    })
}

/// Memory-mapped safetensors files of a model directory, by tensor name.
pub struct Weights {
    maps: Vec<(PathBuf, memmap2::Mmap)>,
    index: BTreeMap<String, usize>,
}

impl Weights {
    /// Opens `model.safetensors` or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Weights> {
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |source| Error::Io { path: p, source }
        };
        let single = dir.join("model.safetensors");
        let files: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else {
            let idx = dir.join("model.safetensors.index.json");
            let text = std::fs::read_to_string(&idx).map_err(|_| {
                Error::Config(format!(
                    "{} has neither model.safetensors nor model.safetensors.index.json",
                    dir.display()
                ))
            })?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", idx.display())))?;
            let wm = v
                .get("weight_map")
                .and_then(|w| w.as_object())
                .ok_or_else(|| Error::Config(format!("{}: no weight_map", idx.display())))?;
            let mut fs: Vec<String> = wm
                .values()
                .filter_map(|x| x.as_str().map(String::from))
                .collect();
            fs.sort();
            fs.dedup();
            fs.into_iter().map(|f| dir.join(f)).collect()
        };
        let mut maps = vec![];
        let mut index = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            let file = std::fs::File::open(f).map_err(io(f))?;
            // SAFETY: the file is only read; pzt does not write model files it has mapped.
            let mm = unsafe { memmap2::Mmap::map(&file) }.map_err(io(f))?;
            let st = safetensors::SafeTensors::deserialize(&mm).map_err(|e| {
                Error::Config(format!("{}: not a safetensors file: {e:?}", f.display()))
            })?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            maps.push((f.clone(), mm));
        }
        Ok(Weights { maps, index })
    }

    /// Tensor names.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.index.keys()
    }

    /// One tensor (copied out of the map into a libtorch tensor).
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let i = *self
            .index
            .get(name)
            .ok_or_else(|| Error::Config(format!("the checkpoint has no tensor `{name}`")))?;
        let (path, mm) = &self.maps[i];
        let st = safetensors::SafeTensors::deserialize(mm)
            .map_err(|e| Error::Config(format!("{}: {e:?}", path.display())))?;
        let view = st
            .tensor(name)
            .map_err(|e| Error::Config(format!("{}: `{name}`: {e:?}", path.display())))?;
        let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
        let data = view.data();
        let t = Tensor::f_from_data_size(data, &shape, st_kind(view.dtype())?)
            .ctx(format!("read `{name}`"))?;
        // The bytes are copied: drop the mapped pages from this process's resident set so that
        // loading never holds the file's pages and the parameters at once. (The file is only
        // read, so the pages are simply re-read from disk if touched again.)
        let page = 4096usize;
        let offset = data.as_ptr() as usize - mm.as_ptr() as usize;
        let start = offset / page * page;
        let end = offset + data.len();
        if end > start {
            // SAFETY: a private read-only file mapping; MADV_DONTNEED only drops clean pages.
            let _ = unsafe {
                mm.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
        Ok(t)
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
}

/// Reads and parses a model directory's `config.json`.
pub fn read_config(dir: &Path) -> Result<Arch> {
    let cp = dir.join("config.json");
    let text = std::fs::read_to_string(&cp)
        .map_err(|e| Error::Config(format!("{}: {e}", cp.display())))?;
    parse(&text, &cp.display().to_string())
}

/// Loads a model directory: config.json and its weights, in the checkpoint dtype or `dtype`.
pub fn load(dir: &Path, dtype: Option<Kind>, device: tch::Device) -> Result<HfModel> {
    let cp = dir.join("config.json");
    let text = std::fs::read_to_string(&cp).map_err(|source| Error::Io {
        path: cp.display().to_string(),
        source,
    })?;
    let arch = parse(&text, &cp.display().to_string())?;
    let kind = dtype.unwrap_or(arch.dtype);
    let tree = arch.build(&Builder::slots().dtype(kind))?;
    let weights = Weights::open(dir)?;
    let mut params: BTreeMap<String, Parameter> = BTreeMap::new();
    let mut used = std::collections::BTreeSet::new();
    let slots: BTreeMap<String, Vec<i64>> = tree
        .all_param_entries()
        .into_iter()
        .map(|(_, _, e)| (e.label().to_string(), e.shape()))
        .collect();
    for (label, hf, tr) in weight_map(&arch) {
        let shape = slots
            .get(&label)
            .ok_or_else(|| Error::Config(format!("internal: no parameter `{label}` for `{hf}`")))?;
        let t = weights.get(&hf).map_err(|_| {
            Error::Config(format!(
                "{}: the checkpoint lacks `{hf}` (shape {:?} expected)",
                dir.display(),
                hf_shape(tr, shape, &arch)
            ))
        })?;
        let want = hf_shape(tr, shape, &arch);
        if t.size() != want {
            return Err(Error::Config(format!(
                "{}: `{hf}` has shape {:?}, expected {:?}",
                dir.display(),
                t.size(),
                want
            )));
        }
        used.insert(hf.clone());
        let v = to_pzt(&t.f_to_kind(Kind::Float).ctx("load")?, tr, shape, &arch)?
            .f_to_kind(kind)
            .and_then(|x| x.f_to_device(device))
            .ctx("load")?;
        params.insert(label.clone(), Parameter::new(label, v));
    }
    for name in weights.names() {
        if !used.contains(name)
            && !recomputed(name)
            && !(arch.tied && (name == "lm_head.weight" || name == "embed_out.weight"))
        {
            return Err(Error::Config(format!(
                "{}: the checkpoint has a tensor pzt does not use: `{name}`",
                dir.display()
            )));
        }
    }
    let list: Vec<Parameter> = params.into_values().collect();
    let tree = tree.bind(&list)?;
    Ok(HfModel {
        arch,
        tree,
        dir: dir.to_path_buf(),
    })
}

/// The tokens of a model tree's vocabulary axis (used by tests and `pzt logits`).
pub fn is_hf_dir(p: &Path) -> bool {
    p.join("config.json").is_file()
}

#[allow(dead_code)]
fn unused(_: ParamEntry) {}

/// Inverse of [`to_pzt`] for the single-tensor transforms.
fn to_hf(t: &Tensor, tr: Transform) -> Result<Tensor> {
    let n = t.numel() as i64;
    Ok(match tr {
        Transform::Same => t.shallow_clone(),
        Transform::Linear(i) => t
            .f_reshape([i, n / i.max(1)])
            .and_then(|x| x.f_transpose(0, 1))
            .and_then(|x| x.f_contiguous())
            .ctx("export weight")?,
        Transform::Reshape => t.f_reshape([n]).ctx("export bias")?,
        Transform::PlusOne => t.f_sub_scalar(1.0).ctx("export norm")?,
        Transform::QkvWeight(_) | Transform::QkvBias(_) => t.shallow_clone(),
    })
}

/// Writes `tree` (a model built for `arch`) as a HuggingFace model directory: `config.json`
/// (the original one, with `dtype` set) and `model.safetensors` in the family's names and
/// layouts.
pub fn export(tree: &Node, arch: &Arch, config_json: &str, out: &Path, dtype: Kind) -> Result<()> {
    // The HF layout can only express the family's own structure: refuse a patched tree rather
    // than silently dropping the patch.
    let reference = arch.build(&Builder::slots())?;
    if !reference.same_structure(tree) {
        return Err(Error::Config(format!(
            "export: the model's structure differs from a plain {} model (changed by [[patch]]es?); the HuggingFace layout cannot express it",
            arch.model_type
        )));
    }
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.display().to_string(),
        source,
    })?;
    let params: BTreeMap<String, Tensor> = tree
        .all_param_entries()
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
        .collect::<Result<_>>()?;
    let get = |l: &str| {
        params
            .get(l)
            .map(|t| t.shallow_clone())
            .ok_or_else(|| Error::Config(format!("export: the model has no parameter `{l}`")))
    };
    let mut fused: BTreeMap<String, Vec<(i64, Tensor, bool)>> = BTreeMap::new();
    let mut outt: Vec<(String, Tensor)> = vec![];
    for (label, hf, tr) in weight_map(arch) {
        let t = get(&label)?;
        match tr {
            Transform::QkvWeight(k) => fused.entry(hf).or_default().push((k, t, true)),
            Transform::QkvBias(k) => fused.entry(hf).or_default().push((k, t, false)),
            _ => outt.push((hf, to_hf(&t, tr)?)),
        }
    }
    let (h, d) = (arch.heads, arch.head_dim);
    for (hf, mut parts) in fused {
        parts.sort_by_key(|p| p.0);
        let per: Vec<Tensor> = parts
            .iter()
            .map(|(_, t, w)| {
                if *w {
                    t.f_reshape([arch.d_model, h, d])
                        .and_then(|x| x.f_permute([1, 2, 0]))
                } else {
                    t.f_reshape([h, d])
                }
            })
            .collect::<std::result::Result<_, _>>()
            .ctx("export fused QKV")?;
        let st = Tensor::f_stack(&per, 1).ctx("export fused QKV")?;
        let flat = if parts.first().map(|p| p.2).unwrap_or(true) {
            st.f_reshape([3 * h * d, arch.d_model])
        } else {
            st.f_reshape([3 * h * d])
        };
        outt.push((
            hf,
            flat.and_then(|x| x.f_contiguous())
                .ctx("export fused QKV")?,
        ));
    }
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
    let mp = out.join("model.safetensors");
    Tensor::write_safetensors(&outt, &mp).ctx(format!("write {}", mp.display()))?;
    let mut cfg: serde_json::Value = serde_json::from_str(config_json)
        .map_err(|e| Error::Config(format!("config.json: {e}")))?;
    if let Some(m) = cfg.as_object_mut() {
        let name = crate::base::dtype::name(dtype);
        let key = if m.contains_key("torch_dtype") {
            "torch_dtype"
        } else {
            "dtype"
        };
        m.insert(key.into(), serde_json::Value::String(name.into()));
    }
    let cp = out.join("config.json");
    let text = serde_json::to_string_pretty(&cfg)
        .map_err(|e| Error::Config(format!("config.json: {e}")))?;
    std::fs::write(&cp, text).map_err(|source| Error::Io {
        path: cp.display().to_string(),
        source,
    })
}
