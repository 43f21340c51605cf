//! A recipe (TOML text, with `#set KEY=VALUE` lines passed as `--set`) through the resolver,
//! the decoder and the planner (`pzt plan`: shapes only, no parameter storage).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

struct Ctx {
    path: PathBuf,
    registry: pzt::tree::Registry,
}

fn ctx() -> Ctx {
    pzt_fuzz::one_thread();
    let dir = pzt_fuzz::scratch("recipe");
    pzt_fuzz::recipe_fixtures(&dir);
    Ctx {
        path: dir.join("recipe.toml"),
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
    std::fs::write(&c.path, text).expect("write the recipe");
    let sets = pzt_fuzz::sets_of(text);
    let recipe = match pzt::recipe::Recipe::load(&c.path, &sets) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = recipe.train_spec(&c.registry).map(|s| s.recipe_toml);
    match pzt::recipe::plan::Plan::shapes_only(recipe, &c.registry) {
        Ok(plan) => {
            let _ = plan.render(3, false);
            let _ = plan.to_json();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| CTX.with(|c| run(c, data)));
