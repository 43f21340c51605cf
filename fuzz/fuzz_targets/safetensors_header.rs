//! A `model.safetensors` read and loaded ([`pzt_fuzz::SafetensorsTarget`]).
//! The body is shared with the corpus replay of `cargo test` (fuzz/src/lib.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fn target() -> pzt_fuzz::SafetensorsTarget {
    pzt_fuzz::one_thread();
    pzt_fuzz::SafetensorsTarget::new(&pzt_fuzz::scratch("safetensors_header"))
}

thread_local! {
    // libtorch handles are not Sync; libFuzzer calls the target on one thread.
    static TARGET: pzt_fuzz::SafetensorsTarget = target();
}

fuzz_target!(|data: &[u8]| TARGET.with(|t| {
    t.run(data);
}));
