//! gpt-oss (`model_type = "gpt_oss"`): attention with biases and sinks (a learned logit per
//! head joining the softmax, `L.self_attn.sinks`), sliding and full layers alternating
//! (`layer_types`, `sliding_window`), YaRN RoPE, and a sparse mixture of experts in every layer:
//! a router with a bias (`L.mlp.router`) whose `num_experts_per_tok` largest logits are
//! softmaxed, and `num_local_experts` experts of `intermediate_size` with biases and the
//! clamped SwiGLU (`swiglu_limit`, `swiglu_alpha`). The experts' weights are stored together:
//! `L.mlp.experts.gate_up_proj` `[experts, hidden, 2 x intermediate]` (the gate in the even
//! columns, up in the odd ones), `down_proj` `[experts, intermediate, hidden]`, and their
//! biases. openai's checkpoints store the experts in MXFP4 (`quantization_config` with
//! `quant_method = "mxfp4"`, `*_blocks` and `*_scales`): they are dequantized on load.

use super::{llama, qwen, suffix, Converter};
use crate::base::Result;
use crate::layers::moe::{ExpertActivation, RouteOrder};
use crate::models::decoder::{MoeConfig, Projection, Role};
use crate::models::hf::config::{sliding_layers, Cfg, Shared};
use crate::models::hf::transform::Transform;
use crate::models::hf::{Arch, Family};

pub const GPT_OSS: Converter = Converter {
    family: Family::GptOss,
    model_type: "gpt_oss",
    tied_by_default: false,
    convert,
    ignored: &[
        "output_router_logits",
        "initial_context_length",
        "hidden_act",
    ],
    name_of,
};

fn convert(c: &Cfg, s: &mut Shared) -> Result<()> {
    llama::convert(c, s)?;
    s.decoder.norm_eps = c.float("rms_norm_eps")?.unwrap_or(1e-5);
    if let Some(q) = c.get("quantization_config") {
        let method = q
            .get("quant_method")
            .and_then(|m| m.as_str())
            .unwrap_or("?");
        // openai's checkpoints: the experts in MXFP4, dequantized on load (`mxfp4.rs`).
        if method != "mxfp4" {
            return Err(c.error(format!(
                "`quantization_config.quant_method` = {method:?} is not supported (pzt reads gpt-oss in BF16, or with its experts in MXFP4)"
            )));
        }
    }
    let n = s.window.len();
    let window = c.int("sliding_window")?;
    let sliding = sliding_layers(c, n, |i| i % 2 == 0)?;
    for (w, slides) in s.window.iter_mut().zip(sliding) {
        if slides {
            *w = Some(window.ok_or_else(|| c.error("sliding layers need `sliding_window`"))?);
        }
    }
    s.decoder.attention_sinks = true;
    let experts = c.req_int("num_local_experts")?;
    let top_k = c.req_int("num_experts_per_tok")?;
    if let Some(e) = c.int("experts_per_token")? {
        if e != top_k {
            return Err(c.error(format!(
                "`experts_per_token` = {e} differs from `num_experts_per_tok` = {top_k}"
            )));
        }
    }
    let hidden = s.decoder.mlp_hidden;
    let alpha = c.float("swiglu_alpha")?.unwrap_or(1.702);
    let limit = c.float("swiglu_limit")?.unwrap_or(7.0);
    s.decoder.moe = Some(MoeConfig {
        num_experts: experts,
        top_k,
        hidden,
        order: RouteOrder::TopKThenSoftmax,
        renormalize: false,
        activation: ExpertActivation::ClampedSwiglu { alpha, limit },
        expert_bias: true,
        router_bias: true,
        aux_loss_coef: qwen::aux_loss_coef(c)?,
        layers: vec![true; n],
    });
    Ok(())
}

fn name_of(a: &Arch, role: Role) -> (String, Transform) {
    let layer = |i: usize| format!("model.layers.{i}.mlp");
    match role {
        Role::Router { layer: i, bias } => {
            let tr = if bias {
                Transform::Reshape
            } else {
                Transform::Router(a.decoder.d_model)
            };
            (format!("{}.router.{}", layer(i), suffix(bias)), tr)
        }
        Role::Experts {
            layer: i,
            which,
            bias,
        } => {
            let b = if bias { "_bias" } else { "" };
            match which {
                Projection::Gate | Projection::Up => {
                    let offset = i64::from(which == Projection::Up);
                    let tr = Transform::Columns { offset, stride: 2 };
                    (format!("{}.experts.gate_up_proj{b}", layer(i)), tr)
                }
                _ => (
                    format!("{}.experts.down_proj{b}", layer(i)),
                    Transform::Same,
                ),
            }
        }
        _ => llama::name_of(a, role),
    }
}
