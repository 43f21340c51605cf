//! Chat data: templates render and tokenize exactly as transformers' `apply_chat_template`
//! (references made by tests/fixtures/make_chat_fixtures.py), the loss covers the assistant
//! turns, and the `chat` source, `pzt generate --chat` and the model's own tokenizer work from
//! the command line.
mod common;
use common::*;
use pzt::data::chat::{conversation, ChatTemplate};
use pzt::data::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("chat-reference.json")).unwrap())
        .unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

#[test]
fn templates_render_and_tokenize_like_transformers() {
    let tok = Tokenizer::load("hf/chat-tiny", &fixtures()).unwrap();
    let cfg = tok.config();
    let llama3 = std::fs::read_to_string(fixtures().join("templates/llama3.jinja")).unwrap();
    let r = reference();
    for (name, source) in [
        ("chatml", cfg.chat_template.clone().unwrap()),
        ("llama3", llama3),
    ] {
        let t = ChatTemplate::new(&source, &cfg).unwrap();
        let cases = r[name].as_array().unwrap();
        assert_eq!(cases.len(), 12);
        for (i, c) in cases.iter().enumerate() {
            let msgs = c["messages"].as_array().unwrap();
            let got = conversation(&t, &tok, msgs, false).unwrap();
            assert_eq!(got.ids, ids(&c["ids"]), "{name} case {i}");
            let prompt = t.render(c["prompt"].as_array().unwrap(), true).unwrap();
            assert_eq!(tok.encode(&prompt).unwrap(), ids(&c["prompt_ids"]), "{name} prompt {i}");
        }
    }
}

#[test]
fn the_loss_covers_assistant_content_and_end_of_turn_only() {
    let tok = Tokenizer::load("hf/chat-tiny", &fixtures()).unwrap();
    let cfg = tok.config();
    let msgs: Vec<serde_json::Value> = serde_json::from_str(
        r#"[{"role": "user", "content": "What is 2 plus 3?"},
            {"role": "assistant", "content": "5."},
            {"role": "user", "content": "Say dog twice."},
            {"role": "assistant", "content": "dog dog"}]"#,
    )
    .unwrap();
    let chatml = ChatTemplate::new(cfg.chat_template.as_deref().unwrap(), &cfg).unwrap();
    let llama3 = ChatTemplate::new(
        &std::fs::read_to_string(fixtures().join("templates/llama3.jinja")).unwrap(),
        &cfg,
    )
    .unwrap();
    for (t, expect) in [
        (&chatml, "5.<|im_end|>\ndog dog<|im_end|>\n"),
        (&llama3, "5.<|eot_id|>dog dog<|eot_id|>"),
    ] {
        let r = conversation(t, &tok, &msgs, false).unwrap();
        let targets: Vec<i64> = r
            .ids
            .iter()
            .zip(&r.mask)
            .filter(|(_, &m)| m == 1)
            .map(|(&i, _)| i)
            .collect();
        // Decoding the targets alone gives back exactly the assistant turns.
        let text: String = targets.iter().map(|&i| tok.decode(&[i])).collect();
        assert_eq!(text, expect);
        // The prompt ends where the last assistant content starts (after its role header).
        let prompt = tok.decode(&r.ids[..r.prompt_len]);
        assert!(prompt.contains("Say dog twice.") && !prompt.contains("dog dog"), "{prompt:?}");
        assert!(prompt.ends_with("assistant\n") || prompt.ends_with("<|end_header_id|>\n\n"), "{prompt:?}");
        let all = conversation(t, &tok, &msgs, true).unwrap();
        assert!(all.mask.iter().all(|&m| m == 1));
    }
}
