//! `model.safetensors` bytes: opened as pzt opens a model's weights (the `safetensors` header
//! reader on a memory map, `Weights::open`), every tensor read out, then loaded as the weights of
//! a tiny Llama (`hf::load`: names, shapes, dtype conversion).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// A Llama small enough that a valid checkpoint of it fits the fuzzer's input size.
const CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "dtype": "float16",
  "hidden_size": 8, "intermediate_size": 8, "num_attention_heads": 2, "num_key_value_heads": 1,
  "head_dim": 4, "num_hidden_layers": 1, "vocab_size": 16, "max_position_embeddings": 32,
  "hidden_act": "silu", "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
  "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false,
  "bos_token_id": 1, "eos_token_id": 2
}"#;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        pzt_fuzz::one_thread();
        let d = pzt_fuzz::scratch("safetensors_header");
        pzt_fuzz::write(&d.join("config.json"), CONFIG.as_bytes());
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    std::fs::write(d.join("model.safetensors"), data).expect("write model.safetensors");
    match pzt::models::hf::Weights::open(d) {
        Ok(w) => {
            let names: Vec<String> = w.names().cloned().collect();
            for n in &names {
                let _ = w.get(n).map(|t| t.size());
            }
        }
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    }
    let _ = pzt::models::hf::load(d, None, tch::Device::Cpu).map(|m| m.tree.num_params());
});
