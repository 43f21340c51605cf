//! Chat data: templates render and tokenize exactly as transformers' `apply_chat_template`
//! (references made by tests/fixtures/make_chat_fixtures.py), the loss covers the assistant
//! turns, and the `chat` source, `pzt generate --chat` and the model's own tokenizer work from
//! the command line.
use crate::common::*;
use pzt::data::chat::{conversation, conversation_with, ChatTemplate, Extra};
use pzt::data::spec::TrainOn;
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
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
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
            assert_eq!(
                tok.encode(&prompt).unwrap(),
                ids(&c["prompt_ids"]),
                "{name} prompt {i}"
            );
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
        assert!(
            prompt.contains("Say dog twice.") && !prompt.contains("dog dog"),
            "{prompt:?}"
        );
        assert!(
            prompt.ends_with("assistant\n") || prompt.ends_with("<|end_header_id|>\n\n"),
            "{prompt:?}"
        );
        let all = conversation(t, &tok, &msgs, true).unwrap();
        assert!(all.mask.iter().all(|&m| m == 1));
    }
}

/// A chat recipe on the tiny chat model; `data` is appended to `[data]`.
fn chat_recipe(dir: &Path, data: &str, steps: u64) -> PathBuf {
    let f = dir.join("chat.toml");
    std::fs::write(
        &f,
        format!(
            "[run]\nname = \"chat\"\nout_dir = \"{out}\"\n[model]\nhf = \"{m}\"\n[data]\nsource = \"chat\"\nfiles = [\"{c}\"]\nseq_len = 96\n{data}\n[train]\nsteps = {steps}\nbatch_size = 8\nlog_every = 10\nthreads = 1\n[optim]\nlr = 3e-3\n",
            out = dir.join("run").display(),
            m = fixtures().join("hf/chat-tiny").display(),
            c = fixtures().join("chat.jsonl").display(),
        ),
    )
    .unwrap();
    f
}

#[test]
fn pzt_data_shows_exports_and_counts_what_overflows() {
    let d = tmpdir("chat", "data");
    let f = chat_recipe(&d, "", 10);
    let (code, o, e) = run_pzt(&["data", f.to_str().unwrap(), "--show", "1"]);
    assert_eq!(code, 0, "{e}");
    // The model's own tokenizer and template (no `tokenizer` key): special tokens decode.
    assert!(o.contains("<|im_start|>assistant\\n[["), "{o}");
    assert!(o.contains("<|im_end|>\\n]]"), "{o}");
    let out = d.join("train.jsonl");
    let (code, o, e) = run_pzt(&[
        "data",
        f.to_str().unwrap(),
        "--export",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let st: serde_json::Value = serde_json::from_str(&o).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, st["train_examples"].as_u64().unwrap());
    // Source order: the exported examples appear in the file's order (a subsequence of it).
    let tok = Tokenizer::load("hf/chat-tiny", &fixtures()).unwrap();
    let t = ChatTemplate::new(
        tok.config().chat_template.as_deref().unwrap(),
        &tok.config(),
    )
    .unwrap();
    let all: Vec<Vec<i64>> = std::fs::read_to_string(fixtures().join("chat.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            conversation(&t, &tok, v["messages"].as_array().unwrap(), false)
                .unwrap()
                .ids
        })
        .collect();
    let mut at = 0;
    for l in &lines {
        let ids = ids(&l["tokens"]);
        let found = all[at..]
            .iter()
            .position(|a| *a == ids)
            .expect("in source order");
        at += found + 1;
        assert_eq!(l["loss_mask"].as_array().unwrap().len(), ids.len());
    }
    // Overflow: with seq_len 40 some conversations do not fit.
    for (overflow, key) in [("skip", "skipped"), ("truncate", "truncated")] {
        let g = chat_recipe(&d, &format!("overflow = \"{overflow}\""), 10);
        let (code, o, e) = run_pzt(&[
            "data",
            g.to_str().unwrap(),
            "--set",
            "data.seq_len=40",
            "--json",
        ]);
        assert_eq!(code, 0, "{o}{e}");
        let st: serde_json::Value = serde_json::from_str(&o).unwrap();
        assert!(st[key].as_u64().unwrap() > 0, "{overflow}: {st}");
        assert!(st["max_length"].as_u64().unwrap() <= 41, "{st}");
    }
}

#[test]
fn chat_training_lowers_the_loss_and_generation_stops_at_the_end_of_turn() {
    let d = tmpdir("chat", "train");
    let f = chat_recipe(&d, "", 60);
    let (code, o, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    let losses: Vec<f64> = std::fs::read_to_string(d.join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
        .collect();
    assert!(losses.last().unwrap() < &(losses[0] * 0.7), "{losses:?}");
    let ck = d.join("run/checkpoints/step-60");
    let (code, o, e) = run_pzt(&[
        "generate",
        ck.to_str().unwrap(),
        "--chat",
        "--prompt",
        "Say dog twice.",
        "--max-new-tokens",
        "40",
    ]);
    assert_eq!(code, 0, "{e}");
    // Only the answer is printed: no templated prompt, and it stops at the end of the turn
    // (which is not printed) instead of writing the next turn.
    assert!(!o.trim().is_empty(), "{o}");
    assert!(
        !o.contains("<|im_start|>") && !o.contains("<|im_end|>"),
        "{o}"
    );
    assert_eq!(o.trim_end().lines().count(), 1, "{o}");
}

#[test]
fn chat_mistakes_exit_2() {
    let d = tmpdir("chat", "faults");
    std::fs::write(
        d.join("bad.jsonl"),
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n{\"messages\": 3}\n",
    )
    .unwrap();
    let bad = chat_recipe(&d, "", 10);
    let text = std::fs::read_to_string(&bad).unwrap().replace(
        &fixtures().join("chat.jsonl").display().to_string(),
        &d.join("bad.jsonl").display().to_string(),
    );
    std::fs::write(&bad, text).unwrap();
    let (code, _, e) = run_pzt(&["data", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        e.contains("bad.jsonl:2:") && e.contains("not an array"),
        "{e}"
    );
    // A template that does not parse, at its key.
    std::fs::write(d.join("t.jinja"), "{% for m in messages %}").unwrap();
    let g = chat_recipe(
        &d,
        &format!("chat_template = \"{}\"", d.join("t.jinja").display()),
        10,
    );
    let (code, _, e) = run_pzt(&["data", g.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        e.contains("chat template does not parse") && e.contains("data.chat_template"),
        "{e}"
    );
    // A tokenizer larger than the model's vocabulary names both sizes.
    let h = d.join("small.toml");
    std::fs::write(
        &h,
        std::fs::read_to_string(chat_recipe(&d, "", 10))
            .unwrap()
            .replace("hf/chat-tiny", "hf/llama-gqa")
            .replace(
                "seq_len = 96",
                &format!(
                    "seq_len = 96\ntokenizer = \"{}\"",
                    fixtures().join("hf/chat-tiny").display()
                ),
            ),
    )
    .unwrap();
    let (code, _, e) = run_pzt(&["train", h.to_str().unwrap()]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("(96)") && e.contains("(360)"), "{e}");
}

#[test]
fn the_prepared_store_is_reused_and_a_damaged_one_is_prepared_again() {
    let d = tmpdir("chat", "store");
    let f = chat_recipe(&d, "", 10);
    let data = |want: &str| {
        let (code, o, e) = run_pzt(&["data", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{e}");
        assert!(o.lines().next().unwrap().contains(want), "{o}");
    };
    data("prepared");
    data("from the cache");
    let stores: Vec<PathBuf> = std::fs::read_dir(d.join("run/cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stores.len(), 1, "{stores:?}");
    let ids = stores[0].join("all.ids");
    assert!(std::fs::metadata(&ids).unwrap().len() > 0);
    std::fs::write(&ids, b"x").unwrap();
    data("prepared");
    data("from the cache");
    // Valid JSON with contents that disagree with the files: an empty train split, a mask of
    // the wrong length. Each is prepared again, not trusted.
    let man = stores[0].join("manifest.json");
    let good = std::fs::read_to_string(&man).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&good).unwrap();
    m["train_examples"] = serde_json::json!(0);
    std::fs::write(&man, m.to_string()).unwrap();
    data("prepared");
    let mask = stores[0].join("all.mask");
    let b = std::fs::read(&mask).unwrap();
    std::fs::write(&mask, &b[..b.len() / 2]).unwrap();
    data("prepared");
    data("from the cache");
}

#[test]
fn parquet_rows_prepare_like_their_jsonl_lines() {
    let d = tmpdir("chat", "parquet");
    // (source of the jsonl twin, parquet file, jsonl file, extra keys)
    for (twin, pq, jl, model) in [
        ("chat", "chat.parquet", "chat.jsonl", true),
        ("jsonl", "tiny.parquet", "tiny.jsonl", false),
    ] {
        let export = |source: &str, file: &str| {
            let f = d.join(format!("{source}-{file}.toml"));
            let head = if model {
                format!(
                    "[model]\nhf = \"{}\"\n",
                    fixtures().join("hf/chat-tiny").display()
                )
            } else {
                String::new()
            };
            std::fs::write(
                &f,
                format!(
                    "[run]\nname = \"p\"\nout_dir = \"{}\"\n{head}[data]\nsource = \"{source}\"\nfiles = [\"{}\"]\nseq_len = 96\n",
                    d.join(format!("run-{source}-{file}")).display(),
                    fixtures().join(file).display()
                ),
            )
            .unwrap();
            let out = d.join(format!("{source}-{file}.jsonl"));
            let (code, o, e) = run_pzt(&[
                "data",
                f.to_str().unwrap(),
                "--export",
                out.to_str().unwrap(),
            ]);
            assert_eq!(code, 0, "{o}{e}");
            std::fs::read_to_string(out).unwrap()
        };
        let a = export("parquet", pq);
        let b = export(twin, jl);
        assert!(!a.is_empty());
        assert_eq!(a, b, "{pq} and {jl} give other examples");
    }
    // A file that is not parquet names itself.
    std::fs::write(d.join("bad.parquet"), "not parquet").unwrap();
    let f = d.join("bad.toml");
    std::fs::write(
        &f,
        format!(
            "[data]\nsource = \"parquet\"\nfiles = [\"{}\"]\nseq_len = 8\n",
            d.join("bad.parquet").display()
        ),
    )
    .unwrap();
    let (code, _, e) = run_pzt(&["data", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{e}");
    assert!(
        e.contains("bad.parquet") && e.contains("not a readable parquet file"),
        "{e}"
    );
}

#[test]
fn the_store_key_follows_the_template_the_tokenizer_config_and_packing() {
    let d = tmpdir("chat", "key");
    let tpl = d.join("t.jinja");
    let llama3 = std::fs::read_to_string(fixtures().join("templates/llama3.jinja")).unwrap();
    std::fs::write(&tpl, &llama3).unwrap();
    let f = chat_recipe(&d, &format!("chat_template = \"{}\"", tpl.display()), 10);
    let first = |args: &[&str]| {
        let mut a = vec!["data", f.to_str().unwrap()];
        a.extend_from_slice(args);
        let (code, o, e) = run_pzt(&a);
        assert_eq!(code, 0, "{e}");
        o.lines().next().unwrap().to_string()
    };
    assert!(first(&[]).contains("prepared"));
    assert!(first(&[]).contains("from the cache"));
    // Another template: prepared again.
    std::fs::write(&tpl, llama3.replace("<|eot_id|>", "<|im_end|>")).unwrap();
    assert!(first(&[]).contains("prepared"));
    // Packing is part of the key.
    assert!(first(&["--set", "data.pack=true"]).contains("prepared"));
    assert!(first(&["--set", "data.pack=true"]).contains("from the cache"));
    // So is the tokenizer's config (a copy of the model directory with another eos_token).
    let m = d.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for e in std::fs::read_dir(fixtures().join("hf/chat-tiny")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), m.join(e.file_name())).unwrap();
    }
    let g = d.join("g.toml");
    std::fs::write(
        &g,
        std::fs::read_to_string(&f).unwrap().replace(
            &fixtures().join("hf/chat-tiny").display().to_string(),
            &m.display().to_string(),
        ),
    )
    .unwrap();
    let run = |p: &Path| {
        run_pzt(&["data", p.to_str().unwrap()])
            .1
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    assert!(run(&g).contains("prepared"));
    assert!(run(&g).contains("from the cache"));
    let cfg = m.join("tokenizer_config.json");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("<|im_end|>", "<|endoftext|>"),
    )
    .unwrap();
    assert!(run(&g).contains("prepared"));
}

#[test]
fn a_runaway_template_is_stopped_with_exit_2_not_a_hang() {
    let d = tmpdir("chat", "runaway");
    let nested = "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}x{% endfor %}{% endfor %}{% endfor %}";
    let wide = "{% for m in messages %}{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}{% endfor %}";
    let deep = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    for (name, t, want) in [
        ("nested", nested, "runs away"),
        ("wide", wide, "writes more than 16 MiB"),
        ("deep", deep, "recursion"),
    ] {
        let file = d.join(format!("{name}.jinja"));
        std::fs::write(&file, t).unwrap();
        let r = chat_recipe(&d, &format!("chat_template = \"{}\"", file.display()), 10);
        let t0 = std::time::Instant::now();
        let (code, o, e) = run_pzt(&["data", r.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {o}{e}");
        assert!(e.contains(want), "{name}: {e}");
        assert!(e.contains("chat.jsonl:1"), "{name}: names the row: {e}");
        assert!(t0.elapsed().as_secs() < 60, "{name}: {:?}", t0.elapsed());
    }
}

/// A parquet file of one BYTE_ARRAY column `text` of `rows`, with or without the UTF8
/// annotation (a binary column holds bytes, not text).
fn parquet_text(path: &Path, rows: &[&str], utf8: bool) {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::writer::SerializedFileWriter;
    let schema = if utf8 {
        "message m { REQUIRED BYTE_ARRAY text (UTF8); }"
    } else {
        "message m { REQUIRED BYTE_ARRAY text; }"
    };
    let schema = std::sync::Arc::new(parquet::schema::parser::parse_message_type(schema).unwrap());
    let file = std::fs::File::create(path).unwrap();
    let mut w = SerializedFileWriter::new(file, schema, Default::default()).unwrap();
    let mut g = w.next_row_group().unwrap();
    let mut c = g.next_column().unwrap().unwrap();
    let values: Vec<ByteArray> = rows.iter().map(|r| ByteArray::from(*r)).collect();
    c.typed::<ByteArrayType>()
        .write_batch(&values, None, None)
        .unwrap();
    c.close().unwrap();
    g.close().unwrap();
    w.close().unwrap();
}

#[test]
fn a_binary_parquet_column_is_refused_not_trained_as_base64() {
    let d = tmpdir("chat", "binary");
    let rows: Vec<String> = (0..40).map(|i| format!("row number {i} of text")).collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    for (utf8, code) in [(true, 0), (false, 2)] {
        let f = d.join(format!("t-{utf8}.parquet"));
        parquet_text(&f, &rows, utf8);
        let r = d.join(format!("r-{utf8}.toml"));
        std::fs::write(
            &r,
            format!(
                "[run]\nname = \"b\"\nout_dir = \"{}\"\n[data]\nsource = \"parquet\"\nfiles = [\"{}\"]\ntokenizer = \"bytes\"\nseq_len = 32\n",
                d.join(format!("run-{utf8}")).display(),
                f.display()
            ),
        )
        .unwrap();
        let (c, o, e) = run_pzt(&["data", r.to_str().unwrap()]);
        assert_eq!(c, code, "utf8 {utf8}: {o}{e}");
        if code == 2 {
            assert!(
                e.contains(":1:") && e.contains("column `text` holds binary data"),
                "{e}"
            );
        }
    }
}

fn template_reference() -> Vec<serde_json::Value> {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("template-reference.json")).unwrap(),
    )
    .unwrap()
}

/// What checking cases of template-reference.json checked.
#[derive(Debug, Default, PartialEq)]
struct Checked {
    /// Conversations rendered and tokenized as transformers does.
    tokens: usize,
    /// ... of which the assistant masks of `{% generation %}` blocks.
    masks: usize,
    /// Generation prompts (text only).
    prompts: usize,
    /// Refusals: the template's `raise_exception`, or Python failing in it (its message).
    refusals: usize,
}

/// Checks one case of template-reference.json: pzt renders (text), tokenizes (ids) and masks
/// (with generation blocks) as transformers did, or refuses where it refused.
fn check_template_case(c: &serde_json::Value, tok: &Tokenizer, sum: &mut Checked) {
    let name = c["template"].as_str().unwrap();
    let source =
        std::fs::read_to_string(fixtures().join(format!("templates/{name}.jinja"))).unwrap();
    let t = ChatTemplate::new(&source, &tok.config()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let msgs = c["messages"].as_array().unwrap();
    let what = format!("{name}, conversation {}", c["conversation"]);
    let extra = Extra {
        tools: c.get("tools").cloned(),
        kwargs: c
            .get("kwargs")
            .and_then(|k| k.as_object().cloned())
            .unwrap_or_default(),
    };
    let gen_prompt = c["add_generation_prompt"].as_bool().unwrap_or(false);
    if let Some(want) = c["error"].as_str() {
        // The template refuses the conversation with `raise_exception`, as in transformers (or
        // Python fails inside it: a loop over none), with the same message.
        let e = t.render_tracked(msgs, gen_prompt, &extra).err();
        let e = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains(want),
            "{what}: transformers fails with {want:?}, pzt: {e:?}"
        );
        sum.refusals += 1;
        return;
    }
    let (text, _) = t
        .render_tracked(msgs, gen_prompt, &extra)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(text, c["text"].as_str().unwrap(), "{what}");
    if gen_prompt {
        sum.prompts += 1;
        return;
    }
    let got = conversation_with(&t, tok, msgs, TrainOn::Assistant, &extra)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.ids, ids(&c["ids"]), "{what}");
    sum.tokens += 1;
    if let Some(m) = c.get("assistant_mask") {
        assert!(t.has_generation_blocks(), "{what}");
        let want: Vec<u8> = ids(m).iter().map(|&x| x as u8).collect();
        assert_eq!(got.mask, want, "{what}");
        sum.masks += 1;
    }
}

/// The templates published models ship (trl 1.16.0's copies, and the templates of Llama 3.2,
/// Mistral Nemo, Mistral Small 3.2, Mistral 7B v0.2, Granite 3.3, Hermes 3, Phi-4-mini and
/// gpt-oss as their tokenizer configs have them), and trl's training variants with
/// `{% generation %}` blocks: pzt renders and tokenizes each conversation as transformers does,
/// and with generation blocks marks exactly transformers' `return_assistant_tokens_mask`. The
/// cases of the templates that read the clock are checked by
/// `templates_that_read_the_clock_render_at_source_date_epoch`.
#[test]
fn published_templates_render_and_mask_like_transformers() {
    let tok = Tokenizer::load("hf/chat-tiny", &fixtures()).unwrap();
    let r = template_reference();
    let mut sum = Checked::default();
    for c in r.iter().filter(|c| c.get("source_date_epoch").is_none()) {
        check_template_case(c, &tok, &mut sum);
    }
    // 31 templates x 7 conversations (those a template refuses checked as refused), the two
    // tool conversations under 10 templates, 4 with template variables; those of the 4
    // templates that read the clock (39) are the other test's.
    assert_eq!(r.len(), 31 * 7 + 2 * 10 + 4);
    let clock = r.iter().filter(|c| c.get("source_date_epoch").is_some());
    assert_eq!(clock.count(), 4 * 7 + 4 * 2 + 3);
    let want = Checked {
        tokens: 185,
        masks: 45,
        prompts: 1,
        refusals: 16,
    };
    assert_eq!(sum, want);
}

/// The cases of the templates that call `strftime_now` (Llama 3.2, Granite 3.3, Mistral Small
/// 3.2, gpt-oss), rendered by transformers at a fixed instant: checked in a child process of
/// this test binary started with `SOURCE_DATE_EPOCH` set to it (setting it in this process
/// would race the other tests' threads), where `strftime_now` renders that instant in UTC.
#[test]
fn templates_that_read_the_clock_render_at_source_date_epoch() {
    let epochs: std::collections::BTreeSet<i64> = template_reference()
        .iter()
        .filter_map(|c| c["source_date_epoch"].as_i64())
        .collect();
    assert_eq!(epochs.len(), 1, "{epochs:?}");
    let epoch = epochs.first().unwrap().to_string();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "chat::clock_cases",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env(pzt::data::chat::SOURCE_DATE_EPOCH, &epoch)
        // Nine hours east of UTC, where the instant is already 1 March: the date must be UTC's.
        .env("TZ", "XST-9")
        .output()
        .unwrap();
    let o = String::from_utf8_lossy(&out.stdout);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && o.contains("1 passed"), "{o}{e}");
}

/// `templates_that_read_the_clock_render_at_source_date_epoch`'s child: the cases with a
/// `source_date_epoch`, under the `SOURCE_DATE_EPOCH` it was started with.
#[test]
#[ignore = "run by templates_that_read_the_clock_render_at_source_date_epoch with SOURCE_DATE_EPOCH set"]
fn clock_cases() {
    let Ok(epoch) = std::env::var(pzt::data::chat::SOURCE_DATE_EPOCH) else {
        eprintln!("SOURCE_DATE_EPOCH is not set: nothing to check");
        return;
    };
    let tok = Tokenizer::load("hf/chat-tiny", &fixtures()).unwrap();
    let mut sum = Checked::default();
    for c in template_reference() {
        let Some(at) = c["source_date_epoch"].as_i64() else {
            continue;
        };
        assert_eq!(at.to_string(), epoch, "{c}");
        check_template_case(&c, &tok, &mut sum);
    }
    let want = Checked {
        tokens: 36,
        masks: 0,
        prompts: 0,
        refusals: 3,
    };
    assert_eq!(sum, want);
}

/// Qwen3's own template drops the reasoning of earlier assistant turns, so a conversation is
/// not the concatenation of its turns: the loss covers each assistant turn as it stands in the
/// whole rendering (the last turn's reasoning included) and its end-of-turn, and no user text.
#[test]
fn a_template_that_rewrites_earlier_turns_trains_on_each_turn_where_it_stands() {
    let tok = Tokenizer::load("hf/chat-tiny", &fixtures()).unwrap();
    let cfg = tok.config();
    let source = std::fs::read_to_string(fixtures().join("templates/qwen3.jinja")).unwrap();
    let t = ChatTemplate::new(&source, &cfg).unwrap();
    let msgs: Vec<serde_json::Value> = serde_json::from_str(
        r#"[{"role": "user", "content": "Think: 4 times 5?"},
            {"role": "assistant", "content": "20.", "reasoning_content": "4 fives make 20."},
            {"role": "user", "content": "And 6 times 7?"},
            {"role": "assistant", "content": "<think>\nsix sevens\n</think>\n\n42."}]"#,
    )
    .unwrap();
    let full = t.render(&msgs, false).unwrap();
    // The first turn's reasoning is gone from the rendering, the last one's is there.
    assert!(
        !full.contains("4 fives") && full.contains("six sevens"),
        "{full}"
    );
    let r = conversation(&t, &tok, &msgs, false).unwrap();
    let (_, offsets) = tok.encode_with_offsets(&full).unwrap();
    let trained: String = offsets
        .iter()
        .zip(&r.mask)
        .filter(|(_, m)| **m == 1)
        .map(|(o, _)| &full[o.0..o.1])
        .collect();
    assert_eq!(
        trained, "20.<|im_end|><think>\nsix sevens\n</think>\n\n42.<|im_end|>",
        "{full}"
    );
    // Evaluation's prompt ends where the last turn begins.
    let prompt: String = offsets[..r.prompt_len]
        .iter()
        .map(|o| &full[o.0..o.1])
        .collect();
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt}");
}

/// Rows with tools, tool calls and template variables, through `pzt data`: the export holds the
/// tokens transformers gives for the same row (template-reference.json's tool conversation
/// under Qwen 3's training template), and `train_on = "last"` keeps only the last turn's loss.
#[test]
fn rows_pass_tools_and_template_variables_and_train_on_last_keeps_the_last_turn() {
    let d = tmpdir("chat", "tools");
    let r = template_reference();
    let case = r
        .iter()
        .find(|c| c["template"] == "qwen3_training" && c["conversation"] == "tools")
        .unwrap();
    // The row names its tools `functions`; a per-row variable the template ignores.
    let row = serde_json::json!({"messages": case["messages"], "functions": case["tools"],
        "chat_template_kwargs": {"enable_thinking": true}});
    std::fs::write(d.join("rows.jsonl"), format!("{row}\n{row}\n")).unwrap();
    std::fs::copy(
        fixtures().join("templates/qwen3_training.jinja"),
        d.join("t.jinja"),
    )
    .unwrap();
    let recipe = |train_on: &str| {
        let f = d.join(format!("{train_on}.toml"));
        std::fs::write(&f, format!(
            "[model]\nhf = \"{m}\"\n[data]\nsource = \"chat\"\nfiles = [\"rows.jsonl\"]\nseq_len = 1024\nchat_template = \"t.jinja\"\ntools_field = \"functions\"\ntemplate_kwargs = {{ enable_thinking = false }}\ntrain_on = \"{train_on}\"\neval_fraction = 0.0\n",
            m = fixtures().join("hf/chat-tiny").display()
        )).unwrap();
        let out = d.join(format!("{train_on}.jsonl"));
        let (code, o, e) = run_pzt(&[
            "data",
            f.to_str().unwrap(),
            "--export",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{o}{e}");
        let line = std::fs::read_to_string(&out).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        (ids(&v["tokens"]), ids(&v["loss_mask"]))
    };
    let (tokens, mask) = recipe("assistant");
    assert_eq!(tokens, ids(&case["ids"]));
    let want: Vec<i64> = ids(&case["assistant_mask"]);
    assert_eq!(mask, want);
    let (tokens, last) = recipe("last");
    assert_eq!(tokens, ids(&case["ids"]));
    // The last turn's tokens only: a suffix of the assistant mask's ones.
    let first = last.iter().position(|&m| m == 1).unwrap();
    assert!(first > want.iter().position(|&m| m == 1).unwrap());
    assert_eq!(&last[first..], &want[first..]);
    assert!(last[..first].iter().all(|&m| m == 0));
}

/// ShareGPT rows (`{"conversations": [{"from", "value"}]}`) prepare exactly as the same
/// conversations written as messages; an unknown `from` is an error naming the file and line.
#[test]
fn sharegpt_rows_prepare_as_their_messages() {
    let d = tmpdir("chat", "sharegpt");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(fixtures().join("chat.jsonl"))
        .unwrap()
        .lines()
        .take(12)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let from = |role: &str| {
        match role {
            "user" => "human",
            "assistant" => "gpt",
            other => other,
        }
        .to_string()
    };
    let mut share = String::new();
    let mut plain = String::new();
    for l in &lines {
        let turns: Vec<serde_json::Value> = l["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| serde_json::json!({"from": from(m["role"].as_str().unwrap()), "value": m["content"]}))
            .collect();
        share.push_str(&format!(
            "{}\n",
            serde_json::json!({ "conversations": turns })
        ));
        plain.push_str(&format!("{l}\n"));
    }
    std::fs::write(d.join("share.jsonl"), share).unwrap();
    std::fs::write(d.join("plain.jsonl"), plain).unwrap();
    let export = |file: &str, extra: &str| {
        let f = d.join(format!("{file}.toml"));
        std::fs::write(&f, format!(
            "[model]\nhf = \"{m}\"\n[data]\nsource = \"chat\"\nfiles = [\"{file}.jsonl\"]\nseq_len = 96\neval_fraction = 0.0\n{extra}",
            m = fixtures().join("hf/chat-tiny").display()
        )).unwrap();
        let out = d.join(format!("{file}-out.jsonl"));
        let (code, o, e) = run_pzt(&[
            "data",
            f.to_str().unwrap(),
            "--export",
            out.to_str().unwrap(),
        ]);
        (
            code,
            format!("{o}{e}"),
            std::fs::read_to_string(&out).unwrap_or_default(),
        )
    };
    let (code, msg, share_out) = export("share", "format = \"sharegpt\"\n");
    assert_eq!(code, 0, "{msg}");
    let (code, msg, plain_out) = export("plain", "");
    assert_eq!(code, 0, "{msg}");
    assert_eq!(share_out.lines().count(), 12);
    assert_eq!(share_out, plain_out);
    // An unknown speaker is named with its line.
    let bad = r#"{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
{"conversations": [{"from": "narrator", "value": "hi"}]}
"#;
    std::fs::write(d.join("bad.jsonl"), bad).unwrap();
    let (code, msg, _) = export("bad", "format = \"sharegpt\"\n");
    assert_eq!(code, 2, "{msg}");
    assert!(
        msg.contains("bad.jsonl:2") && msg.contains("`from` = \"narrator\""),
        "{msg}"
    );
}

/// `eval_files`: the eval split is read from its own files, as the training files are read;
/// `pzt data` reports both splits; giving `eval_fraction` too is an error.
#[test]
fn eval_files_make_the_eval_split() {
    let d = tmpdir("chat", "eval-files");
    let all = std::fs::read_to_string(fixtures().join("chat.jsonl")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    std::fs::write(d.join("train.jsonl"), lines[..40].join("\n") + "\n").unwrap();
    std::fs::write(d.join("eval.jsonl"), lines[40..50].join("\n") + "\n").unwrap();
    let recipe = |extra: &str| {
        let f = d.join("r.toml");
        std::fs::write(&f, format!(
            "[model]\nhf = \"{m}\"\n[data]\nsource = \"chat\"\nfiles = [\"train.jsonl\"]\neval_files = [\"eval.jsonl\"]\nseq_len = 96\n{extra}",
            m = fixtures().join("hf/chat-tiny").display()
        )).unwrap();
        f
    };
    let f = recipe("");
    let (code, o, e) = run_pzt(&["data", f.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{o}{e}");
    let st: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(
        (st["train_examples"].as_u64(), st["eval_examples"].as_u64()),
        (Some(40), Some(10)),
        "{o}"
    );
    // The train split is train.jsonl's conversations, all of them: none went to eval.
    let out = d.join("train-out.jsonl");
    let (code, o, e) = run_pzt(&[
        "data",
        f.to_str().unwrap(),
        "--export",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let tok = Tokenizer::load("hf/chat-tiny", &fixtures()).unwrap();
    let t = ChatTemplate::new(
        tok.config().chat_template.as_deref().unwrap(),
        &tok.config(),
    )
    .unwrap();
    let mut got: Vec<Vec<i64>> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| ids(&serde_json::from_str::<serde_json::Value>(l).unwrap()["tokens"]))
        .collect();
    let mut want: Vec<Vec<i64>> = lines[..40]
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            conversation(&t, &tok, v["messages"].as_array().unwrap(), false)
                .unwrap()
                .ids
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let f = recipe("eval_fraction = 0.1\n");
    let (code, o, e) = run_pzt(&["data", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{o}");
    assert!(e.contains("give either `eval_files`"), "{e}");
}

/// `prompt_template` and `completion_template`: Jinja over a row's fields (alpaca's
/// `instruction`, `input`, `output`), the loss on the completion and the end token.
#[test]
fn templated_rows_write_prompt_and_completion_from_the_fields() {
    let d = tmpdir("chat", "alpaca");
    let rows = [
        serde_json::json!({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}),
        serde_json::json!({"instruction": "Say red twice.", "input": "", "output": "red red"}),
    ];
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(d.join("alpaca.jsonl"), text).unwrap();
    let prompt = "### Instruction:\n{{ instruction }}\n{% if input %}### Input:\n{{ input }}\n{% endif %}### Response:\n";
    let f = d.join("r.toml");
    std::fs::write(&f, format!(
        "[model]\nhf = \"{m}\"\n[data]\nsource = \"jsonl\"\nfiles = [\"alpaca.jsonl\"]\nseq_len = 96\neval_fraction = 0.0\nprompt_template = {p}\ncompletion_template = \"{{{{ output }}}}\"\n",
        m = fixtures().join("hf/chat-tiny").display(),
        p = toml::Value::String(prompt.into())
    )).unwrap();
    let out = d.join("out.jsonl");
    let (code, o, e) = run_pzt(&[
        "data",
        f.to_str().unwrap(),
        "--export",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let tok = Tokenizer::load("hf/chat-tiny", &fixtures()).unwrap();
    let mut got: Vec<(Vec<i64>, Vec<i64>)> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (ids(&v["tokens"]), ids(&v["loss_mask"]))
        })
        .collect();
    let mut want: Vec<(Vec<i64>, Vec<i64>)> = [
        // As in Jinja, the newline that ends the template is dropped.
        (
            "### Instruction:\nAdd the numbers.\n### Input:\n2 and 3\n### Response:",
            "5",
        ),
        ("### Instruction:\nSay red twice.\n### Response:", "red red"),
    ]
    .iter()
    .map(|(p, c)| {
        let p = tok.encode(p).unwrap();
        let mut c = tok.encode(c).unwrap();
        c.push(tok.eos_id());
        let mask: Vec<i64> = p.iter().map(|_| 0).chain(c.iter().map(|_| 1)).collect();
        ([p, c].concat(), mask)
    })
    .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

/// A template's `raise_exception` (Gemma 3's, on roles that do not alternate) stops the data
/// preparation with exit 2, quoting the template's message and naming the row's file and line.
#[test]
fn a_templates_raise_exception_names_the_row() {
    let d = tmpdir("chat", "raise");
    std::fs::copy(
        fixtures().join("templates/gemma3_training.jinja"),
        d.join("t.jinja"),
    )
    .unwrap();
    let good = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#;
    let bad = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]}"#;
    std::fs::write(d.join("rows.jsonl"), format!("{good}\n{bad}\n")).unwrap();
    let f = d.join("r.toml");
    std::fs::write(&f, format!(
        "[model]\nhf = \"{m}\"\n[data]\nsource = \"chat\"\nfiles = [\"rows.jsonl\"]\nseq_len = 96\nchat_template = \"t.jinja\"\n",
        m = fixtures().join("hf/chat-tiny").display()
    )).unwrap();
    let (code, o, e) = run_pzt(&["data", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{o}{e}");
    assert!(e.contains("rows.jsonl:2"), "{e}");
    assert!(
        e.contains("Conversation roles must alternate user/assistant/user/assistant/..."),
        "{e}"
    );
    assert!(!e.contains("panicked") && !e.contains("backtrace"), "{e}");
}

/// `SOURCE_DATE_EPOCH` through `pzt data`: with it, a Llama 3.2 row's tokens are transformers'
/// at that instant (its "Today Date"); an unparsable value exits 2 naming the variable.
#[test]
fn source_date_epoch_fixes_the_date_a_template_renders() {
    let d = tmpdir("chat", "epoch");
    let r = template_reference();
    let case = r
        .iter()
        .find(|c| c["template"] == "llama3_2" && c["conversation"] == 0)
        .unwrap();
    assert!(case["text"]
        .as_str()
        .unwrap()
        .contains("Today Date: 29 Feb 2024"));
    let row = serde_json::json!({"messages": case["messages"]});
    std::fs::write(d.join("rows.jsonl"), format!("{row}\n")).unwrap();
    std::fs::copy(
        fixtures().join("templates/llama3_2.jinja"),
        d.join("t.jinja"),
    )
    .unwrap();
    let f = d.join("r.toml");
    std::fs::write(&f, format!(
        "[model]\nhf = \"{m}\"\n[data]\nsource = \"chat\"\nfiles = [\"rows.jsonl\"]\nseq_len = 96\nchat_template = \"t.jinja\"\neval_fraction = 0.0\n",
        m = fixtures().join("hf/chat-tiny").display()
    )).unwrap();
    let out = d.join("out.jsonl");
    let data = |epoch: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_pzt"))
            .args(["data", f.to_str().unwrap(), "--export"])
            .arg(&out)
            .env("NO_COLOR", "1")
            .env_remove("LD_LIBRARY_PATH")
            .env(pzt::data::chat::SOURCE_DATE_EPOCH, epoch)
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        (o.status.code().unwrap_or(-1), e)
    };
    let (code, e) = data("yesterday");
    assert_eq!(code, 2, "{e}");
    assert!(
        e.contains("SOURCE_DATE_EPOCH") && e.contains("yesterday"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    let epoch = case["source_date_epoch"].as_i64().unwrap().to_string();
    let (code, e) = data(&epoch);
    assert_eq!(code, 0, "{e}");
    let tokens = || {
        let line = std::fs::read_to_string(&out).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        ids(&v["tokens"])
    };
    assert_eq!(tokens(), ids(&case["ids"]));
    // Another instant is another store (the date differs), not the one prepared before.
    let (code, e) = data("1000000000");
    assert_eq!(code, 0, "{e}");
    assert_ne!(tokens(), ids(&case["ids"]));
    let (code, e) = data(&epoch);
    assert_eq!(code, 0, "{e}");
    assert_eq!(tokens(), ids(&case["ids"]));
}
