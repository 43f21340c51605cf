//! A checkpoint's `state.json`: read as a resumed run reads it (`store::load_model`: the state,
//! the parameters from a valid `model.safetensors`, the base check), then used as the trainer
//! uses it on resume (the CPU generator restored from `rng_cpu`, the data cursor placed at
//! `cursor`), and written back as a checkpoint writes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pzt::tree::Node;
use std::path::PathBuf;

struct Ctx {
    dir: PathBuf,
    tree: Node,
}

fn ctx() -> Ctx {
    pzt_fuzz::one_thread();
    let dir = pzt_fuzz::scratch("state_json");
    let b = pzt::tree::Builder::new(0);
    let tree = pzt::models::mlp::mlp(
        &b.scope("mlp"),
        "features",
        "hidden",
        &[2, 4, 1],
        pzt::layers::misc::Activation::Tanh,
    )
    .expect("mlp");
    let tensors: Vec<(String, tch::Tensor)> = tree
        .trainable_parameters()
        .iter()
        .map(|p| (p.label().to_string(), p.value()))
        .collect();
    tch::Tensor::write_safetensors(&tensors, dir.join("model.safetensors"))
        .expect("write model.safetensors");
    // An empty optimizer state, as a checkpoint of a stateless optimizer has.
    let mut opt = 8u64.to_le_bytes().to_vec();
    opt.extend_from_slice(b"{}      ");
    pzt_fuzz::write(&dir.join("optimizer.safetensors"), &opt);
    Ctx { dir, tree }
}

thread_local! {
    // libtorch handles are not Sync; libFuzzer calls the target on one thread.
    static CTX: Ctx = ctx();
}

fn run(c: &Ctx, data: &[u8]) {
    std::fs::write(c.dir.join("state.json"), data).expect("write state.json");
    let state = match pzt::run::checkpoint::load_model(&c.dir, &c.tree) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = pzt::run::checkpoint::set_cpu_rng_hex(&state.rng_cpu);
    let mut cursor = pzt::data::Cursor::new(state.seed, 40, state.cursor);
    let _ = cursor.next_batch(8);
    let _ = serde_json::to_string_pretty(&state);
}

fuzz_target!(|data: &[u8]| CTX.with(|c| run(c, data)));
