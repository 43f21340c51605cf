//! A HuggingFace `config.json` parsed, built and planned ([`pzt_fuzz::HfConfigTarget`]).
//! The body is shared with the corpus replay of `cargo test` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fn target() -> pzt_fuzz::HfConfigTarget {
    pzt_fuzz::one_thread();
    pzt_fuzz::HfConfigTarget::new(&pzt_fuzz::scratch("hf_config"))
}

thread_local! {
    // libtorch handles are not Sync; libFuzzer calls the target on one thread.
    static TARGET: pzt_fuzz::HfConfigTarget = target();
}

fuzz_target!(|data: &[u8]| TARGET.with(|t| {
    t.run(data);
}));
