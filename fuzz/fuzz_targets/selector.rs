//! A selector parsed and applied to two trees ([`pzt_fuzz::SelectorTarget`]).
//! The body is shared with the corpus replay of `cargo test` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fn target() -> pzt_fuzz::SelectorTarget {
    pzt_fuzz::one_thread();
    pzt_fuzz::SelectorTarget::new()
}

thread_local! {
    // libtorch handles are not Sync; libFuzzer calls the target on one thread.
    static TARGET: pzt_fuzz::SelectorTarget = target();
}

fuzz_target!(|data: &[u8]| TARGET.with(|t| {
    t.run(data);
}));
