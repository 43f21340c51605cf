//! One llama-like decoder (Penzai's `llamalike_common`): the native `transformer` builder and
//! every Hugging Face family (Llama, Mistral, Gemma, GPT-NeoX, Phi-2, Cohere, ...: see
//! [`crate::models::hf`]) map their configuration
//! into a [`DecoderConfig`] and build the same kind of tree with [`DecoderConfig::build`]:
//!
//! ```text
//! Sequential
//!   embed: EmbeddingLookup                   tokens {batch, seq} -> {batch, seq, embedding}
//!   embed_scale: Rescale                     (Gemma: x sqrt(d_model))
//!   blocks: Sequential[0..L]
//!     i: Sequential                          serial residual
//!       attention: Residual(delta: Sequential[norm, attention, post_norm?, dropout?])
//!       mlp:       Residual(delta: Sequential[norm, mlp, post_norm?, dropout?])
//!     i: BranchAndAddTogether                parallel residual (GPT-NeoX):
//!       residual: Identity                   x + attention(norm(x)) + mlp(norm'(x))
//!       attention: Sequential[norm, attention]
//!       mlp: Sequential[norm, mlp]
//!     i: BranchAndAddTogether                parallel residual, one norm (Phi-2, Cohere):
//!       residual: Identity                   x + attention(norm(x)) + mlp(norm(x))
//!       delta: Sequential[norm, branches: BranchAndAddTogether[attention, mlp]]
//!   final_norm: RMSLayerNorm | LayerNorm
//!   lm_head: Linear {embedding} -> {vocab}   (or EmbeddingDecode sharing embed's table)
//!   lm_head_bias: AddBias {vocab}            (Phi-2)
//!   logit_scale: Rescale                     (Granite, Cohere)
//!   final_softcap: TanhSoftCap               (Gemma 2)
//! ```
//!
//! `attention` is [`crate::layers::attention::SelfAttentionConfig`]'s block
//! (`Sequential[attention: Attention, output]`: causal or sliding-window per layer, RoPE,
//! grouped-query heads, optional QK-norm and logit soft-capping). `mlp` is gated
//! (`Sequential[gate_up: BranchAndMultiplyTogether[Sequential[linear, act], up], down]`: SwiGLU,
//! GeGLU) or plain (`Sequential[up, act, down]`).
//!
//! Parameter labels are tree paths (`blocks.0.attention.delta.attention.attention.
//! input_to_query.linear.weights`). Their init names keep the names of the builder's
//! sub-scopes (`blocks.0.attention.delta.attention.query.linear.weights`), so a native model
//! initializes exactly as it did before labels became paths. [`Decoder::parts`] says what each
//! parameter is, which is all a weight map (Hugging Face names) needs.

mod build;

use crate::layers::misc::Activation;
use crate::layers::moe::{ExpertActivation, RouteOrder};
use crate::layers::rope::RopeScaling;
use crate::params::init::Initializer;
use crate::tree::Node;

/// The attention settings of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerAttention {
    /// Causal sliding-window attention with this window (`None`: full causal).
    pub window: Option<i64>,
    /// RoPE base wavelength.
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// Whether the layer rotates queries and keys at all (false: a NoPE layer, SmolLM3).
    pub rope: bool,
}

/// A sparse mixture of experts in place of the MLP of some layers (Qwen3-MoE, Mixtral,
/// gpt-oss): `mlp` is then `SparseMoE[router: Sequential[linear, route], experts]`
/// ([`crate::layers::moe`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    pub num_experts: i64,
    /// Experts per token.
    pub top_k: i64,
    /// Each expert's hidden size.
    pub hidden: i64,
    pub order: RouteOrder,
    /// Divide the chosen experts' probabilities by their sum.
    pub renormalize: bool,
    pub activation: ExpertActivation,
    /// Biases on the experts' projections (gpt-oss).
    pub expert_bias: bool,
    /// A bias on the router (gpt-oss).
    pub router_bias: bool,
    /// The weight of the load-balancing loss in training.
    pub aux_loss_coef: f64,
    /// Which layers have experts (the others a dense MLP of `mlp_hidden`).
    pub layers: Vec<bool>,
}

/// Everything the decoder builder needs. See the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub vocab_size: i64,
    pub d_model: i64,
    pub num_heads: i64,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: i64,
    pub head_dim: i64,
    pub mlp_hidden: i64,
    /// Gated MLP (`down(act(gate(x)) * up(x))`) or plain (`down(act(up(x)))`).
    pub gated_mlp: bool,
    pub activation: Activation,
    pub mlp_bias: bool,
    /// LayerNorm (with bias) instead of RMSNorm.
    pub layer_norm: bool,
    /// With `layer_norm`, whether the LayerNorms have a bias (false: Cohere's LayerNorm, the
    /// mean subtracted and no bias).
    pub layer_norm_bias: bool,
    pub norm_eps: f64,
    /// One entry per layer.
    pub layers: Vec<LayerAttention>,
    /// Rotate only the first this many dims of each head (GPT-NeoX's partial rotary).
    pub rotary_dims: Option<i64>,
    /// Rotate adjacent pairs of dims instead of the two halves (GLM-4, Cohere).
    pub rope_interleaved: bool,
    /// The query scale (default `1/sqrt(head_dim)`).
    pub query_scale: Option<f64>,
    pub qkv_bias: bool,
    pub output_bias: bool,
    /// RMS-normalize queries and keys over each head (Gemma 3).
    pub qk_norm: bool,
    /// With `qk_norm`, normalize over all heads of the projection at once (OLMo 2).
    pub qk_norm_whole: bool,
    /// With `qk_norm` and `layer_norm`, a scale per head (Cohere's `[heads, head_dim]`
    /// weights) instead of one shared by the heads. The QK-norm is of the model's norm kind:
    /// an RMSNorm, or with `layer_norm` a LayerNorm (with a bias per `layer_norm_bias`).
    pub qk_norm_per_head: bool,
    /// A norm begins each residual branch (false: OLMo 2, whose branches end in one).
    pub pre_norms: bool,
    /// Soft-cap the attention logits (Gemma 2).
    pub attn_softcap: Option<f64>,
    /// Soft-cap the output logits (Gemma 2).
    pub final_softcap: Option<f64>,
    /// Multiply the embeddings by this (Gemma: `sqrt(d_model)`).
    pub embed_scale: Option<f64>,
    /// A norm after attention and after the MLP too (Gemma 2 and 3).
    pub sandwich_norms: bool,
    /// `x + attn(ln1(x)) + mlp(ln2(x))` (GPT-NeoX) instead of two residual steps.
    pub parallel_residual: bool,
    /// With `parallel_residual`, one norm feeds both branches: `x + attn(ln(x)) + mlp(ln(x))`
    /// (Phi-2, Cohere).
    pub shared_norm: bool,
    /// Output logits from the embedding table (shared parameter) instead of a separate head.
    pub tie_embeddings: bool,
    /// A learned bias added to the output logits (Phi-2's `lm_head.bias`).
    pub lm_head_bias: bool,
    /// Dropout at the end of each residual branch (active only with a `random_stream`).
    pub dropout: f64,
    /// Multiply each residual branch by this before it is added (Granite's
    /// `residual_multiplier`).
    pub residual_scale: Option<f64>,
    /// Multiply the output logits by this (Granite: `1 / logits_scaling`).
    pub logit_scale: Option<f64>,
    /// A sparse mixture of experts in place of the MLP of some layers.
    pub moe: Option<MoeConfig>,
    /// A learned logit per head joins each attention softmax (gpt-oss).
    pub attention_sinks: bool,
    /// How the embedding table is initialized (default: normal, std 1).
    pub embedding_init: Option<Initializer>,
    pub embedding_axis: String,
    pub vocab_axis: String,
    pub neurons_axis: String,
}

impl DecoderConfig {
    /// A Llama-style decoder of these sizes: SwiGLU MLP, RMSNorm (eps 1e-6), no biases, full
    /// causal attention with RoPE (base 10000) in every layer, untied head, no dropout, the
    /// axis names `embedding`, `vocab`, `neurons`. The families change what differs.
    pub fn llama(
        vocab_size: i64,
        d_model: i64,
        num_layers: usize,
        (num_heads, num_kv_heads, head_dim): (i64, i64, i64),
        mlp_hidden: i64,
    ) -> Self {
        DecoderConfig {
            vocab_size,
            d_model,
            num_heads,
            num_kv_heads,
            head_dim,
            mlp_hidden,
            gated_mlp: true,
            activation: Activation::Silu,
            mlp_bias: false,
            layer_norm: false,
            layer_norm_bias: true,
            norm_eps: 1e-6,
            layers: vec![
                LayerAttention {
                    window: None,
                    rope_theta: 10_000.0,
                    rope_scaling: None,
                    rope: true,
                };
                num_layers
            ],
            rotary_dims: None,
            rope_interleaved: false,
            query_scale: None,
            qkv_bias: false,
            output_bias: false,
            qk_norm: false,
            qk_norm_whole: false,
            qk_norm_per_head: false,
            pre_norms: true,
            attn_softcap: None,
            final_softcap: None,
            embed_scale: None,
            sandwich_norms: false,
            parallel_residual: false,
            shared_norm: false,
            tie_embeddings: false,
            lm_head_bias: false,
            dropout: 0.0,
            residual_scale: None,
            logit_scale: None,
            moe: None,
            attention_sinks: false,
            embedding_init: None,
            embedding_axis: "embedding".into(),
            vocab_axis: "vocab".into(),
            neurons_axis: "neurons".into(),
        }
    }
}

/// The most layers a decoder may have (the largest published models have under 200): a
/// bound checked before the per-layer settings are allocated.
pub const MAX_LAYERS: i64 = 4096;

impl DecoderConfig {
    /// Checks sizes and numbers: every size at least 1, at most [`MAX_LAYERS`] layers, finite
    /// norm epsilon >= 0, finite RoPE bases > 0, windows and rotary dimensions at least 1.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("mlp_hidden", self.mlp_hidden),
        ] {
            if v < 1 {
                return Err(format!("{name} must be at least 1, got {v}"));
            }
        }
        crate::layers::attention::check_heads(self.num_heads, self.num_kv_heads)?;
        let n = self.layers.len() as i64;
        if !(1..=MAX_LAYERS).contains(&n) {
            return Err(format!(
                "the number of layers must be 1 to {MAX_LAYERS}, got {n}"
            ));
        }
        if !(self.norm_eps >= 0.0 && self.norm_eps.is_finite()) {
            return Err(format!(
                "the norm epsilon must be a finite number >= 0, got {}",
                self.norm_eps
            ));
        }
        for l in &self.layers {
            if !(l.rope_theta > 0.0 && l.rope_theta.is_finite()) {
                return Err(format!(
                    "rope_theta must be a finite number > 0, got {}",
                    l.rope_theta
                ));
            }
            if let Some(sc) = &l.rope_scaling {
                sc.check()?;
            }
            if let Some(w) = l.window.filter(|&w| w < 1) {
                return Err(format!("the sliding window must be at least 1, got {w}"));
            }
        }
        if let Some(r) = self.rotary_dims.filter(|&r| r < 1) {
            return Err(format!("the rotary dimensions must be at least 1, got {r}"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        for (what, v) in [
            ("residual scale", self.residual_scale),
            ("logit scale", self.logit_scale),
        ] {
            if let Some(f) = v.filter(|f| !f.is_finite()) {
                return Err(format!("the {what} must be a finite number, got {f}"));
            }
        }
        if !self.pre_norms && (self.parallel_residual || !self.sandwich_norms) {
            return Err("branches without a norm before them need sandwich norms, serially".into());
        }
        self.check_moe()?;
        if self.parallel_residual && self.residual_scale.is_some() {
            return Err("a residual scale needs serial residual branches".into());
        }
        if self.shared_norm && !self.parallel_residual {
            return Err("one norm shared by both branches needs parallel residual branches".into());
        }
        if self.qk_norm_per_head && !(self.qk_norm && self.layer_norm && !self.qk_norm_whole) {
            return Err("a QK-norm scale per head needs a per-head LayerNorm QK-norm".into());
        }
        Ok(())
    }
}

impl DecoderConfig {
    /// Checks the mixture of experts: its sizes, its layers, its loss weight.
    fn check_moe(&self) -> std::result::Result<(), String> {
        let Some(m) = &self.moe else {
            return Ok(());
        };
        if m.num_experts < 1 || m.hidden < 1 || !(1..=m.num_experts).contains(&m.top_k) {
            return Err(format!(
                "a mixture of experts needs at least one expert, a hidden size >= 1 and 1 to {} experts per token, got {} experts of {} with {} per token",
                m.num_experts.max(1), m.num_experts, m.hidden, m.top_k
            ));
        }
        if m.layers.len() != self.layers.len() {
            return Err("the mixture of experts must say which of the layers have experts".into());
        }
        if !(m.aux_loss_coef.is_finite() && m.aux_loss_coef >= 0.0) {
            return Err(format!(
                "router_aux_loss_coef must be a finite number >= 0, got {}",
                m.aux_loss_coef
            ));
        }
        Ok(())
    }
}

/// Where a norm sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormSite {
    /// Before the attention of layer `i`.
    Attention(usize),
    /// After the attention of layer `i` (sandwich norms).
    AfterAttention(usize),
    /// Before the MLP of layer `i`.
    Mlp(usize),
    /// After the MLP of layer `i` (sandwich norms).
    AfterMlp(usize),
    /// QK-norm of the queries of layer `i`.
    Query(usize),
    /// QK-norm of the keys of layer `i`.
    Key(usize),
    /// After the last block.
    Final,
}

/// A projection of layer `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    Query,
    Key,
    Value,
    Output,
    Gate,
    Up,
    Down,
}

/// What a parameter of the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The embedding table.
    Embedding,
    /// A norm's scale, or its bias.
    Norm { site: NormSite, bias: bool },
    /// A projection's weights, or its bias.
    Projection {
        layer: usize,
        which: Projection,
        bias: bool,
    },
    /// The output head (untied).
    LmHead,
    /// The router of layer `layer`'s experts: its weights, or its bias.
    Router { layer: usize, bias: bool },
    /// One projection of every expert of layer `layer` (`Gate`, `Up` or `Down`: a tensor whose
    /// first axis is `experts`), or its bias.
    Experts {
        layer: usize,
        which: Projection,
        bias: bool,
    },
    /// Expert `index` of an [`Role::Experts`] tensor, for checkpoints that store each expert
    /// apart (never given to a parameter: the weight map expands `Experts` into these).
    Expert {
        layer: usize,
        which: Projection,
        bias: bool,
        index: i64,
    },
    /// The attention sinks of layer `layer`.
    Sinks(usize),
    /// The output head's bias (Phi-2), tied head or not.
    LmHeadBias,
}

/// A built decoder: the tree, and the role of each of its parameters (by label, in build
/// order).
#[derive(Debug, Clone)]
pub struct Decoder {
    pub tree: Node,
    pub parts: Vec<(String, Role)>,
}
