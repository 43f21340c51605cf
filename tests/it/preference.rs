//! Preference rows (`source = "preference"`): TRL's shapes prepare, show and export as TRL's own
//! `_prepare_dataset` tokenizes them (references made by
//! tests/fixtures/make_preference_fixtures.py with trl 1.16.0 and transformers 5.23.0), overlong
//! rows follow `overflow`, and bad rows exit 2 naming their file and line.
use crate::common::*;
use pzt::data::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("preference-reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A recipe preparing `files` (paths) as preference rows with `tokenizer` (a fixture
/// directory); `extra` is appended to `[data]`.
fn recipe(dir: &Path, name: &str, files: &[PathBuf], tokenizer: &str, extra: &str) -> PathBuf {
    let f = dir.join(format!("{name}.toml"));
    let files: Vec<String> = files
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    std::fs::write(
        &f,
        format!(
            "[run]\nname = \"{name}\"\nout_dir = \"{out}\"\n[data]\nsource = \"preference\"\nfiles = [{files}]\ntokenizer = \"{tok}\"\nseq_len = 256\n{extra}\n",
            out = dir.join("run").display(),
            files = files.join(", "),
            tok = fixtures().join("hf").join(tokenizer).display(),
        ),
    )
    .unwrap();
    f
}

/// `pzt data --export` of a recipe: the exported lines.
fn exported(f: &Path, out: &Path) -> Vec<serde_json::Value> {
    let (code, o, e) = run_pzt(&[
        "data",
        f.to_str().unwrap(),
        "--export",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every file of the fixture set (plain and conversational pairs, implicit prompts, unpaired
/// rows), with each tokenizer (no post-processor; `add_bos_token` in the config, which
/// transformers 5 ignores when there is a tokenizer.json; a post-processor that adds BOS) and
/// with Qwen 3's template (whose prompt alone renders differently from the prompt followed by
/// an answer): `pzt data --export` writes exactly TRL's `prompt_ids`, `chosen_ids`,
/// `rejected_ids` (or `completion_ids` and `label`), row by row.
#[test]
fn preference_rows_tokenize_exactly_as_trl() {
    let d = tmpdir("preference", "trl");
    let r = reference();
    let cases = r["cases"].as_array().unwrap();
    for (k, c) in cases.iter().enumerate() {
        let file = fixtures().join(format!("preference/{}.jsonl", c["file"].as_str().unwrap()));
        let mut extra = "eval_fraction = 0.0".to_string();
        if let Some(t) = c["chat_template"].as_str() {
            let path = fixtures().join(format!("templates/{t}.jinja"));
            extra.push_str(&format!("\nchat_template = \"{}\"", path.display()));
        }
        let f = recipe(
            &d,
            &format!("case{k}"),
            &[file],
            c["tokenizer"].as_str().unwrap(),
            &extra,
        );
        let got = exported(&f, &d.join(format!("case{k}.jsonl")));
        let want = c["rows"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{c}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                g, w,
                "{} with {} ({})",
                c["file"], c["tokenizer"], c["chat_template"]
            );
        }
    }
    assert_eq!(cases.len(), 15);
}

/// `tokenizer(text)` as transformers 5 gives it: the post-processor's special tokens, and
/// `add_bos_token` in tokenizer_config.json ignored next to a tokenizer.json.
#[test]
fn texts_get_the_special_tokens_transformers_adds() {
    let r = reference();
    for c in r["texts"].as_array().unwrap() {
        let dir = format!("hf/{}", c["tokenizer"].as_str().unwrap());
        let tok = Tokenizer::load(&dir, &fixtures()).unwrap();
        let want: Vec<i64> = serde_json::from_value(c["ids"].clone()).unwrap();
        assert_eq!(
            tok.encode_special(c["text"].as_str().unwrap()).unwrap(),
            want,
            "{c}"
        );
    }
}

/// A record's prompt starts with the tokenizer's BOS (as TRL's `tokenizer(prompt)`), the text
/// documents too; with no post-processor nothing is added.
#[test]
fn records_start_with_the_tokenizers_bos() {
    let d = tmpdir("preference", "bos");
    let rows = d.join("rows.jsonl");
    std::fs::write(
        &rows,
        "{\"prompt\": \"The sky is\", \"completion\": \" blue.\"}\n{\"text\": \"hello world\"}\n",
    )
    .unwrap();
    for (tok, bos) in [("tok-template", Some(3)), ("chat-tiny", None)] {
        let f = recipe(
            &d,
            tok,
            std::slice::from_ref(&rows),
            tok,
            "eval_fraction = 0.0",
        );
        let text = std::fs::read_to_string(&f)
            .unwrap()
            .replace("source = \"preference\"", "source = \"jsonl\"");
        std::fs::write(&f, text).unwrap();
        for l in exported(&f, &d.join(format!("{tok}.jsonl"))) {
            let first = l["tokens"][0].as_i64();
            match bos {
                Some(b) => assert_eq!(first, Some(b), "{l}"),
                None => assert_ne!(first, Some(3), "{l}"),
            }
        }
    }
}

/// `--show` prints each pair's prompt and both completions with their loss spans, and the
/// statistics count pairs and unpaired labels.
#[test]
fn pzt_data_shows_pairs_and_unpaired_rows() {
    let d = tmpdir("preference", "show");
    let f = recipe(
        &d,
        "pairs",
        &[fixtures().join("preference/plain.jsonl")],
        "chat-tiny",
        "eval_fraction = 0.0",
    );
    let (code, o, e) = run_pzt(&["data", f.to_str().unwrap(), "--show", "2"]);
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("rows        preference pairs"), "{o}");
    assert!(
        o.contains("--- example 0: a pair: prompt 7 tokens, chosen 3, rejected 3"),
        "{o}"
    );
    assert!(
        o.contains(
            "prompt    The sky is\nchosen    [[ blue.<|im_end|>]]\nrejected  [[ green.<|im_end|>]]"
        ),
        "{o}"
    );
    let f = recipe(
        &d,
        "unpaired",
        &[fixtures().join("preference/unpaired.jsonl")],
        "chat-tiny",
        "eval_fraction = 0.0",
    );
    let (code, o, e) = run_pzt(&["data", f.to_str().unwrap(), "--show", "3"]);
    assert_eq!(code, 0, "{e}");
    assert!(
        o.contains("rows        unpaired: 2 desirable, 1 undesirable"),
        "{o}"
    );
    assert!(o.contains("undesirable[[ green.<|im_end|>]]"), "{o}");
    let (code, o, _) = run_pzt(&["data", f.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let st: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(
        (st["kind"].as_str(), st["desirable"].as_u64()),
        (Some("unpaired"), Some(2))
    );
}

/// Overlong pairs are skipped and counted, or truncated: the prompt loses its first tokens and
/// the completions keep their ends.
#[test]
fn overlong_pairs_are_skipped_or_cut_from_the_prompts_start() {
    let d = tmpdir("preference", "overflow");
    let rows = d.join("long.jsonl");
    let long = "word ".repeat(30);
    std::fs::write(
        &rows,
        format!(
            "{}\n{}\n",
            serde_json::json!({"prompt": long, "chosen": " yes", "rejected": " no"}),
            serde_json::json!({"prompt": "Hi", "chosen": " yes", "rejected": " no"})
        ),
    )
    .unwrap();
    let extra = "eval_fraction = 0.0";
    let f = recipe(&d, "skip", std::slice::from_ref(&rows), "chat-tiny", extra);
    let (code, o, e) = run_pzt(&[
        "data",
        f.to_str().unwrap(),
        "--set",
        "data.seq_len=16",
        "--json",
    ]);
    assert_eq!(code, 0, "{e}");
    let st: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(
        (st["skipped"].as_u64(), st["train_examples"].as_u64()),
        (Some(1), Some(1))
    );
    let f = recipe(
        &d,
        "cut",
        &[rows],
        "chat-tiny",
        &format!("{extra}\noverflow = \"truncate\""),
    );
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("seq_len = 256", "seq_len = 15");
    std::fs::write(&f, text).unwrap();
    let lines = exported(&f, &d.join("cut.jsonl"));
    assert_eq!(lines.len(), 2);
    let tok = Tokenizer::load("hf/chat-tiny", &fixtures()).unwrap();
    let l = &lines[0];
    let ids = |k: &str| -> Vec<i64> { serde_json::from_value(l[k].clone()).unwrap() };
    let (p, c, r) = (ids("prompt_ids"), ids("chosen_ids"), ids("rejected_ids"));
    assert_eq!(p.len() + c.len().max(r.len()), 16, "{l}");
    assert_eq!(tok.decode(&c), " yes<|im_end|>");
    assert!(tok.decode(&p).ends_with("word "), "{l}");
    let (code, o, _) = run_pzt(&["data", f.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    assert!(o.contains("\"truncated\": 1"), "{o}");
}

/// Parquet files of preference rows prepare as their jsonl lines; `eval_files` makes the eval
/// split.
#[test]
fn parquet_rows_and_eval_files_prepare_as_jsonl_lines() {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::writer::SerializedFileWriter;
    let d = tmpdir("preference", "parquet");
    let text = std::fs::read_to_string(fixtures().join("preference/plain.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let schema = "message m { REQUIRED BYTE_ARRAY prompt (UTF8); REQUIRED BYTE_ARRAY chosen (UTF8); REQUIRED BYTE_ARRAY rejected (UTF8); }";
    let schema = std::sync::Arc::new(parquet::schema::parser::parse_message_type(schema).unwrap());
    let pq = d.join("plain.parquet");
    let mut w = SerializedFileWriter::new(
        std::fs::File::create(&pq).unwrap(),
        schema,
        Default::default(),
    )
    .unwrap();
    let mut g = w.next_row_group().unwrap();
    for col in ["prompt", "chosen", "rejected"] {
        let mut c = g.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = rows
            .iter()
            .map(|r| ByteArray::from(r[col].as_str().unwrap()))
            .collect();
        c.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        c.close().unwrap();
    }
    g.close().unwrap();
    w.close().unwrap();
    let from_jsonl = exported(
        &recipe(
            &d,
            "j",
            &[fixtures().join("preference/plain.jsonl")],
            "chat-tiny",
            "eval_fraction = 0.0",
        ),
        &d.join("j.jsonl"),
    );
    let from_parquet = exported(
        &recipe(&d, "p", &[pq], "chat-tiny", "eval_fraction = 0.0"),
        &d.join("p.jsonl"),
    );
    assert_eq!(from_jsonl, from_parquet);
    let extra = format!(
        "eval_files = [\"{}\"]",
        fixtures().join("preference/implicit_plain.jsonl").display()
    );
    let f = recipe(
        &d,
        "e",
        &[fixtures().join("preference/plain.jsonl")],
        "chat-tiny",
        &extra,
    );
    let (code, o, e) = run_pzt(&["data", f.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{e}");
    let st: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(
        (st["train_examples"].as_u64(), st["eval_examples"].as_u64()),
        (Some(4), Some(2))
    );
}

/// Bad preference data exits 2 with a message naming the row, and nothing trains on it yet.
#[test]
fn preference_mistakes_exit_2_naming_the_row() {
    let d = tmpdir("preference", "bad");
    let cases: [(&str, &str, &str); 6] = [
        ("shape", "{\"prompt\": \"a\", \"answer\": \"b\"}", "a preference row needs `chosen` and `rejected`"),
        ("label", "{\"prompt\": \"a\", \"completion\": \"b\", \"label\": \"yes\"}", "`label` should be true or false"),
        ("mixed", "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"a\", \"completion\": \"b\", \"label\": true}", ":2: the row is one of unpaired rows"),
        ("types", "{\"prompt\": \"a\", \"chosen\": [{\"role\": \"assistant\", \"content\": \"b\"}], \"rejected\": \"c\"}", "each completion should be one"),
        ("empty", "{\"chosen\": \"\", \"rejected\": \"c\"}", "share no prompt"),
        ("json", "{\"prompt\": ", "invalid JSON"),
    ];
    for (name, rows, want) in cases {
        let p = d.join(format!("{name}.jsonl"));
        std::fs::write(&p, rows).unwrap();
        let f = recipe(
            &d,
            name,
            std::slice::from_ref(&p),
            "chat-tiny",
            "eval_fraction = 0.0",
        );
        let (code, o, e) = run_pzt(&["data", f.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {o}{e}");
        assert!(
            e.contains(want) && e.contains(&format!("{name}.jsonl:")),
            "{name}: {e}"
        );
    }
    // Conversational rows with a tokenizer that has no template; packing; training.
    let f = recipe(
        &d,
        "bytes",
        &[fixtures().join("preference/conversational.jsonl")],
        "chat-tiny",
        "",
    );
    let text = std::fs::read_to_string(&f).unwrap();
    let tok_line = text
        .lines()
        .find(|l| l.starts_with("tokenizer"))
        .unwrap()
        .to_string();
    std::fs::write(&f, text.replace(&tok_line, "tokenizer = \"bytes\"")).unwrap();
    let (code, _, e) = run_pzt(&["data", f.to_str().unwrap()]);
    assert!(code == 2 && e.contains("needs a chat template"), "{e}");
    let f = recipe(
        &d,
        "pack",
        &[fixtures().join("preference/plain.jsonl")],
        "chat-tiny",
        "pack = true",
    );
    let (code, _, e) = run_pzt(&["data", f.to_str().unwrap()]);
    assert!(
        code == 2 && e.contains("preference rows are not packed"),
        "{e}"
    );
    let f = recipe(
        &d,
        "train",
        &[fixtures().join("preference/plain.jsonl")],
        "chat-tiny",
        "",
    );
    let mut text = std::fs::read_to_string(&f).unwrap();
    text.push_str(&format!(
        "[model]\nhf = \"{}\"\n[train]\nsteps = 1\nbatch_size = 2\n[optim]\nlr = 1e-3\n",
        fixtures().join("hf/chat-tiny").display()
    ));
    std::fs::write(&f, text).unwrap();
    let (code, _, e) = run_pzt(&["train", f.to_str().unwrap()]);
    assert!(code == 2 && e.contains("preference objective"), "{e}");
}
