//! A HuggingFace `config.json`: parsed into an architecture, its slots-only tree built (no
//! parameter storage), the checkpoint names mapped, then planned as `pzt plan` plans a recipe
//! with `[model] hf = DIR` (shape inference on the meta device).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

struct Ctx {
    config: PathBuf,
    recipe: PathBuf,
    registry: pzt::tree::Registry,
}

fn ctx() -> Ctx {
    pzt_fuzz::one_thread();
    let dir = pzt_fuzz::scratch("hf_config");
    let recipe = dir.join("recipe.toml");
    pzt_fuzz::write(
        &recipe,
        b"[model]\nhf = \"model\"\ninput = { axes = { batch = 1, seq = 8 }, dtype = \"int64\" }\n",
    );
    Ctx {
        config: dir.join("model/config.json"),
        recipe,
        registry: pzt::builtin_registry(),
    }
}

thread_local! {
    // libtorch handles are not Sync; libFuzzer calls the target on one thread.
    static CTX: Ctx = ctx();
}

fn run(c: &Ctx, data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let arch = match pzt::models::hf::parse(text, "config.json") {
        Ok(a) => a,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    // Finding 4 (FUZZING.md): planning takes about 1 ms per layer in release (minutes here for
    // the accepted maximum, 4096), so deep models are not built: fuzzing goes on.
    if arch.decoder.layers.len() > 256 {
        return;
    }
    let Ok(built) = arch.build(&pzt::tree::Builder::slots().dtype(arch.dtype)) else {
        return;
    };
    let _ = pzt::recipe::plan::count_params(&built.tree);
    let _ = pzt::models::hf::names::names(&arch, &built.parts);
    pzt_fuzz::write(&c.config, data);
    if let Ok(r) = pzt::recipe::Recipe::load(&c.recipe, &[]) {
        if let Ok(plan) = pzt::recipe::plan::Plan::shapes_only(r, &c.registry) {
            let _ = plan.render(3, false);
        }
    }
}

fuzz_target!(|data: &[u8]| CTX.with(|c| run(c, data)));
