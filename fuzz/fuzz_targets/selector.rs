//! A selector (`pzt select RECIPE SELECTOR`, `[[patch]] select = ...`) parsed, its error
//! rendered, and evaluated against two fixed model trees (recipes/tiny-transformer.toml and the
//! chat-tiny Llama fixture, both planned without parameters).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pzt::tree::selector::Selector;
use pzt::tree::Node;

fn trees() -> Vec<Node> {
    pzt_fuzz::one_thread();
    let reg = pzt::builtin_registry();
    let r = pzt::recipe::Recipe::load(&pzt_fuzz::repo("recipes/tiny-transformer.toml"), &[])
        .expect("tiny-transformer recipe");
    let tiny = pzt::recipe::plan::Plan::tree_only(&r, &reg).expect("tiny-transformer tree");
    let arch = pzt::models::hf::read_config(&pzt_fuzz::repo("tests/fixtures/hf/chat-tiny"))
        .expect("chat-tiny config");
    let llama = arch
        .build(&pzt::tree::Builder::slots())
        .expect("chat-tiny tree")
        .tree;
    vec![tiny, llama]
}

thread_local! {
    // Trees hold libtorch handles (not Sync); libFuzzer calls the target on one thread.
    static TREES: Vec<Node> = trees();
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Selector::parse(text) {
        Err(e) => {
            let _ = e.render(text);
        }
        Ok(sel) => {
            TREES.with(|trees| {
                for tree in trees {
                    let s = sel.select(tree);
                    let _ = s.count();
                    for (path, node) in s.get() {
                        let _ = (path, node.kind());
                    }
                }
            });
        }
    }
});
