//! A `tokenizer.json`: loaded as pzt loads a tokenizer (`Tokenizer::load`), then a short text
//! encoded (with and without offsets) and the ids decoded back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

const TEXT: &str = "The cat sat on the mat. </s> 37+58=95 <|im_start|>user\nhé ✓\n";

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| pzt_fuzz::scratch("tokenizer_json").join("tokenizer.json"))
}

fuzz_target!(|data: &[u8]| {
    let p = path();
    std::fs::write(p, data).expect("write tokenizer.json");
    let tok = match pzt::data::tokenizer::Tokenizer::load(
        &p.display().to_string(),
        std::path::Path::new(""),
    ) {
        Ok(t) => t,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = tok.vocab_size();
    let _ = tok.eos_id();
    let _ = tok.token_id("</s>");
    if let Ok(ids) = tok.encode(TEXT) {
        let _ = tok.decode(&ids);
    }
    let _ = tok.encode_with_offsets(TEXT);
    let _ = tok.decode(&[0, 1, 2, 3, 1_000_000, -1]);
});
