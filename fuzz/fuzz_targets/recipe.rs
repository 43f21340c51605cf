//! A recipe (TOML text, with `#set KEY=VALUE` lines passed as `--set`) through the resolver,
//! the decoder and the planner ([`pzt_fuzz::RecipeTarget`]).
//! The body is shared with the corpus replay of `cargo test` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fn target() -> pzt_fuzz::RecipeTarget {
    pzt_fuzz::one_thread();
    pzt_fuzz::RecipeTarget::new(&pzt_fuzz::scratch("recipe"))
}

thread_local! {
    // libtorch handles are not Sync; libFuzzer calls the target on one thread.
    static TARGET: pzt_fuzz::RecipeTarget = target();
}

fuzz_target!(|data: &[u8]| TARGET.with(|t| {
    t.run(data);
}));
