//! A `tokenizer.json` loaded and used ([`pzt_fuzz::TokenizerTarget`]).
//! The body is shared with the corpus replay of `cargo test` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fn target() -> pzt_fuzz::TokenizerTarget {
    pzt_fuzz::one_thread();
    pzt_fuzz::TokenizerTarget::new(&pzt_fuzz::scratch("tokenizer_json"))
}

thread_local! {
    // libtorch handles are not Sync; libFuzzer calls the target on one thread.
    static TARGET: pzt_fuzz::TokenizerTarget = target();
}

fuzz_target!(|data: &[u8]| TARGET.with(|t| {
    t.run(data);
}));
