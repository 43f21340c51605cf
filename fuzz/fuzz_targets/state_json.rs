//! A checkpoint's `state.json` loaded ([`pzt_fuzz::StateJsonTarget`]).
//! The body is shared with the corpus replay of `cargo test` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fn target() -> pzt_fuzz::StateJsonTarget {
    pzt_fuzz::one_thread();
    pzt_fuzz::StateJsonTarget::new(&pzt_fuzz::scratch("state_json"))
}

thread_local! {
    // libtorch handles are not Sync; libFuzzer calls the target on one thread.
    static TARGET: pzt_fuzz::StateJsonTarget = target();
}

fuzz_target!(|data: &[u8]| TARGET.with(|t| {
    t.run(data);
}));
