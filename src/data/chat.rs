//! Chat templates: conversations rendered with a tokenizer's Jinja `chat_template` (through
//! `minijinja`, set up as transformers' `apply_chat_template` sets up Jinja: `trim_blocks`,
//! `lstrip_blocks`, `raise_exception`, Python string methods, `bos_token` / `eos_token` and
//! `add_generation_prompt` in the context), and turned into token examples whose loss covers
//! the assistant turns.
//!
//! Which tokens carry the loss (`train_on = "assistant"`):
//!
//! - A template with `{% generation %}` blocks (transformers' tag): the tokens of what the
//!   blocks wrote, exactly as transformers' `return_assistant_tokens_mask` marks them.
//! - Otherwise each assistant turn is found by rendering prefixes of the conversation: for the
//!   assistant message `k`, its content and the end-of-turn text the template writes after it
//!   are the characters between `render(messages[..k], add_generation_prompt = true)` and
//!   `render(messages[..=k])`. The role header (the generation prompt) is not part of it.
//! - A template that does not render a conversation as the concatenation of its turns (Qwen3
//!   drops the reasoning of earlier turns, some inject a system prompt or merge turns): each
//!   assistant turn's text as it stands in the rendering of the whole conversation, from the
//!   end of its role header (or the start of its content) to the end of the end-of-turn text
//!   after its content ([`turns_in_place`]).

use super::spec::TrainOn;
use super::tokenizer::{Tokenizer, TokenizerConfig};
use crate::base::{Error, Result};
use minijinja::{Environment, ErrorKind, Value};
use serde_json::Value as Json;

/// A compiled chat template with the tokenizer's special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// Whether the template has `{% generation %}` blocks.
    generation: bool,
}

/// What a `{% generation %}` block's output is wrapped in while rendering (characters of the
/// Unicode private use area), so that its place in the rendering can be found and the
/// markers taken out again.
const GEN_START: &str = "\u{F8F0}\u{F8F1}";
const GEN_END: &str = "\u{F8F2}\u{F8F3}";

/// A block tag `{%...%}` at the start of `s`: its length, whitespace-control signs (`-`, `+`
/// or none) before and after, and its body; None when `s` holds no `%}`.
fn tag_at(s: &str) -> Option<(usize, &str, &str, &str)> {
    let end = s.find("%}")?;
    let inner = &s[2..end];
    let (lead, body) = match inner.strip_prefix(['-', '+']) {
        Some(b) => (&inner[..1], b),
        None => ("", inner),
    };
    let (body, trail) = match body.strip_suffix(['-', '+']) {
        Some(b) => (b, &body[body.len() - 1..]),
        None => (body, ""),
    };
    Some((end + 2, lead, body, trail))
}

/// The template as minijinja runs it, and whether it has `{% generation %}` blocks:
///
/// - transformers' `{% generation %}...{% endgeneration %}` as a block minijinja knows: a
///   `{% filter %}` block (the same whitespace control, trimming and scoping) whose filter
///   wraps the output in [`GEN_START`] and [`GEN_END`];
/// - each `{% for %}` loop's iterable through the `pzt_iterable` filter ([`checked_for`]):
///   a loop over none fails, as Python does (minijinja's loops over none run zero times).
///
/// Expressions, comments, and what stands between `{% raw %}` and `{% endraw %}` are left as
/// they are.
fn rewrite_tags(source: &str) -> (String, bool) {
    let mut out = String::with_capacity(source.len());
    let mut found = false;
    let mut raw = false;
    let mut rest = source;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tag = &rest[i..];
        if let Some(close) = ["{{", "{#"]
            .iter()
            .position(|o| tag.starts_with(o))
            .map(|k| ["}}", "#}"][k])
        {
            // An expression or a comment: left as it is.
            let len = tag[2..].find(close).map_or(tag.len(), |e| e + 4);
            out.push_str(&tag[..len]);
            rest = &tag[len..];
            continue;
        }
        if !tag.starts_with("{%") {
            out.push('{');
            rest = &tag[1..];
            continue;
        }
        let Some((len, lead, body, trail)) = tag_at(tag) else {
            out.push_str(tag);
            return (out, found);
        };
        let kept = &tag[..len];
        match body.trim() {
            "endraw" if raw => {
                raw = false;
                out.push_str(kept);
            }
            _ if raw => out.push_str(kept),
            "raw" => {
                raw = true;
                out.push_str(kept);
            }
            "generation" => {
                found = true;
                out.push_str(&format!("{{%{lead} filter pzt_generation {trail}%}}"));
            }
            "endgeneration" => out.push_str(&format!("{{%{lead} endfilter {trail}%}}")),
            b => match checked_for(b) {
                Some(f) => out.push_str(&format!("{{%{lead} {f} {trail}%}}")),
                None => out.push_str(kept),
            },
        }
        rest = &tag[len..];
    }
    out.push_str(rest);
    (out, found)
}

/// The words of a Jinja expression that stand outside strings and brackets, with their byte
/// ranges (attribute names after a `.` are not words); None where a string or a bracket is
/// not closed.
fn top_level_words(s: &str) -> Option<Vec<(usize, usize)>> {
    let mut words = vec![];
    let (mut depth, mut quote, mut escaped) = (0u32, None, false);
    let mut start: Option<usize> = None;
    let mut prev = ' ';
    for (i, c) in s.char_indices() {
        let word_char = c.is_alphanumeric() || c == '_';
        if let Some(a) = start.filter(|_| !word_char) {
            words.push((a, i));
            start = None;
        }
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' if depth > 0 => depth -= 1,
                ')' | ']' | '}' => return None,
                _ if depth == 0 && word_char && start.is_none() => {
                    let after_word = prev.is_alphanumeric() || prev == '_' || prev == '.';
                    if c.is_alphabetic() || c == '_' {
                        start = (!after_word).then_some(i);
                    }
                }
                _ => {}
            },
        }
        prev = c;
    }
    if let Some(a) = start {
        words.push((a, s.len()));
    }
    (depth == 0 && quote.is_none()).then_some(words)
}

/// A `for` tag's body with its iterable passed through the `pzt_iterable` filter: `for x in
/// EXPR if c` becomes `for x in (EXPR)|pzt_iterable if c`. None for another tag, or a `for`
/// this does not read (it is then left as it is).
fn checked_for(body: &str) -> Option<String> {
    let words = top_level_words(body)?;
    let word = |&(a, b): &(usize, usize)| &body[a..b];
    if words.first().map(word) != Some("for") {
        return None;
    }
    let i = words.iter().position(|w| word(w) == "in")?;
    let from = words[i].1;
    let to = words[i + 1..]
        .iter()
        .find(|w| matches!(word(w), "if" | "recursive"))
        .map_or(body.len(), |w| w.0);
    let expr = body[from..to].trim();
    if expr.is_empty() {
        return None;
    }
    let (head, tail) = (body[..from].trim(), body[to..].trim());
    let rewritten = format!("{head} ({expr})|pzt_iterable {tail}");
    Some(rewritten.trim_end().to_string())
}

/// `text` without the generation markers, and the byte spans the blocks wrote in it.
fn take_generation_spans(text: &str) -> (String, Vec<(usize, usize)>) {
    let mut out = String::with_capacity(text.len());
    let mut spans = vec![];
    let mut open: Vec<usize> = vec![];
    let mut rest = text;
    loop {
        let s = rest.find(GEN_START);
        let e = rest.find(GEN_END);
        match (s, e) {
            (Some(a), b) if b.is_none_or(|b| a < b) => {
                out.push_str(&rest[..a]);
                open.push(out.len());
                rest = &rest[a + GEN_START.len()..];
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                if let Some(a) = open.pop() {
                    if open.is_empty() {
                        spans.push((a, out.len()));
                    }
                }
                rest = &rest[b + GEN_END.len()..];
            }
            _ => break,
        }
    }
    out.push_str(rest);
    (out, spans)
}

/// How Python's `json.dumps` lays its output out (`tojson`'s `indent`, `separators` and
/// `sort_keys`; `ensure_ascii` is false, as in transformers' `tojson`).
#[derive(Clone)]
struct PyJson {
    indent: Option<String>,
    item: String,
    key: String,
    sort_keys: bool,
}

impl Default for PyJson {
    fn default() -> Self {
        PyJson {
            indent: None,
            item: ", ".into(),
            key: ": ".into(),
            sort_keys: false,
        }
    }
}

impl PyJson {
    /// Python's `json.dumps(v, ensure_ascii=False, ...)`: keys in order (or sorted), and with
    /// an indent, one item per line.
    fn write(&self, v: &Json, depth: usize, out: &mut String) {
        let newline = |out: &mut String, d: usize| {
            if let Some(ind) = &self.indent {
                out.push('\n');
                out.push_str(&ind.repeat(d));
            }
        };
        let items = |out: &mut String,
                     n: usize,
                     open: char,
                     close: char,
                     f: &mut dyn FnMut(usize, &mut String)| {
            out.push(open);
            if n == 0 {
                out.push(close);
                return;
            }
            for i in 0..n {
                if i > 0 {
                    out.push_str(&self.item);
                }
                newline(out, depth + 1);
                f(i, out);
            }
            newline(out, depth);
            out.push(close);
        };
        match v {
            Json::Array(a) => items(out, a.len(), '[', ']', &mut |i, out| {
                self.write(&a[i], depth + 1, out)
            }),
            Json::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                if self.sort_keys {
                    keys.sort();
                }
                items(out, keys.len(), '{', '}', &mut |i, out| {
                    out.push_str(&Json::String(keys[i].clone()).to_string());
                    out.push_str(&self.key);
                    self.write(&o[keys[i]], depth + 1, out);
                })
            }
            other => out.push_str(&other.to_string()),
        }
    }
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
fn tojson(
    v: Value,
    kwargs: minijinja::value::Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let bad = |m: String| minijinja::Error::new(ErrorKind::InvalidOperation, m);
    let j: Json = serde_json::to_value(&v).map_err(|e| bad(e.to_string()))?;
    let mut o = PyJson::default();
    if let Some(ind) = kwargs
        .get::<Option<Value>>("indent")?
        .filter(|i| !i.is_none())
    {
        o.indent = Some(match ind.as_i64() {
            Some(n) => " ".repeat(n.clamp(0, 64) as usize),
            None => ind.to_string(),
        });
        o.item = ",".into();
    }
    if let Some(sep) = kwargs.get::<Option<Vec<String>>>("separators")? {
        if let [item, key] = sep.as_slice() {
            (o.item, o.key) = (item.clone(), key.clone());
        }
    }
    o.sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let _ = kwargs.get::<Option<bool>>("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut s = String::new();
    o.write(&j, 0, &mut s);
    Ok(Value::from_safe_string(s))
}

/// The environment variable that fixes `strftime_now`'s clock (the reproducible-builds
/// convention): seconds since 1970-01-01 00:00:00 UTC.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// The instant `strftime_now` renders, and whether it is in UTC: `SOURCE_DATE_EPOCH` (in UTC)
/// when it is set, else now (in local time, as transformers' `datetime.now()`). The variable
/// is read at each call.
fn clock() -> std::result::Result<(libc::time_t, bool), String> {
    let Some(v) = std::env::var_os(SOURCE_DATE_EPOCH) else {
        // SAFETY: `time` with a null pointer only returns the time.
        return Ok((unsafe { libc::time(std::ptr::null_mut()) }, false));
    };
    v.to_str()
        .and_then(|s| s.parse::<libc::time_t>().ok())
        .map(|t| (t, true))
        .ok_or_else(|| {
            format!("{SOURCE_DATE_EPOCH} is not a whole number of seconds since 1970-01-01 00:00:00 UTC: {v:?}")
        })
}

/// transformers' `strftime_now(format)`: the time now (or at `SOURCE_DATE_EPOCH`), formatted
/// as C's `strftime`.
fn strftime_now(format: String) -> std::result::Result<Value, minijinja::Error> {
    let err = |m: String| minijinja::Error::new(ErrorKind::InvalidOperation, m);
    let bad = || err("strftime_now: a bad format".into());
    let (t, utc) = clock().map_err(err)?;
    let fmt = std::ffi::CString::new(format).map_err(|_| bad())?;
    let mut buf = vec![0u8; 512];
    // SAFETY: `gmtime_r`, `localtime_r` and `strftime` write only into the buffers given them.
    let n = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let split = if utc {
            libc::gmtime_r(&t, &mut tm)
        } else {
            libc::localtime_r(&t, &mut tm)
        };
        if split.is_null() {
            return Err(err(format!(
                "strftime_now: no date for {SOURCE_DATE_EPOCH} {t}"
            )));
        }
        libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            fmt.as_ptr(),
            &tm,
        )
    };
    buf.truncate(n);
    String::from_utf8(buf).map(Value::from).map_err(|_| bad())
}

/// The names a message's reasoning comes under, the first set one winning (transformers'
/// `_REASONING_FIELDS`).
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// transformers' `_alias_reasoning_fields`: a message with reasoning (under any of
/// [`REASONING_FIELDS`], not null) is given it as `thinking` (first, unless the message has its
/// own) and as `reasoning_content`, so templates that read either see it (gpt-oss reads
/// `thinking`, Qwen `reasoning_content`): `{"thinking": r, **message, "reasoning_content": r}`.
fn alias_reasoning(m: &Json) -> Json {
    let Some(o) = m.as_object() else {
        return m.clone();
    };
    let Some(r) = REASONING_FIELDS
        .iter()
        .find_map(|k| o.get(*k).filter(|v| !v.is_null()))
    else {
        return m.clone();
    };
    let mut out = serde_json::Map::with_capacity(o.len() + 2);
    out.insert("thinking".into(), r.clone());
    for (k, v) in o {
        out.insert(k.clone(), v.clone());
    }
    out.insert("reasoning_content".into(), r.clone());
    Json::Object(out)
}

/// The most work one rendering may do (minijinja's instructions): a template whose loops run
/// away (nested loops over the messages, a huge range) stops with an error instead of hanging.
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// The most text one rendering may write.
pub const TEMPLATE_OUTPUT: usize = 16 << 20;

/// How deep templates may nest calls, macros and includes.
const TEMPLATE_RECURSION: usize = 100;

/// Collects a rendering and fails once it passes [`TEMPLATE_OUTPUT`] bytes.
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + b.len() > TEMPLATE_OUTPUT {
            return Err(std::io::Error::other("output limit"));
        }
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ChatTemplate {
    /// Compiles `source` with the special tokens of `cfg`.
    pub fn new(source: &str, cfg: &TokenizerConfig) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_recursion_limit(TEMPLATE_RECURSION);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        // Python's `iterable` test: `None` and numbers are not iterable (minijinja's own test
        // says `none` is), strings, lists, dicts and undefined values are.
        env.add_test("iterable", |v: Value| -> bool {
            use minijinja::value::ValueKind;
            match v.kind() {
                ValueKind::None | ValueKind::Bool | ValueKind::Number => false,
                ValueKind::Undefined
                | ValueKind::String
                | ValueKind::Seq
                | ValueKind::Map
                | ValueKind::Iterable => true,
                _ => v.try_iter().is_ok(),
            }
        });
        env.add_filter("tojson", tojson);
        env.add_function("strftime_now", strftime_now);
        // A `for` loop's iterable ([`rewrite_tags`]): none is not iterable, as in Python.
        env.add_filter(
            "pzt_iterable",
            |v: Value| -> std::result::Result<Value, minijinja::Error> {
                if v.is_none() {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "'NoneType' object is not iterable (a for loop over none)",
                    ));
                }
                Ok(v)
            },
        );
        env.add_filter("pzt_generation", |body: String| {
            Value::from_safe_string(format!("{GEN_START}{body}{GEN_END}"))
        });
        let (source, generation) = rewrite_tags(source);
        env.add_template_owned("chat", source)
            .map_err(|e| Error::Config(format!("the chat template does not parse: {e}")))?;
        Ok(ChatTemplate {
            env,
            bos: cfg.bos_token.clone().unwrap_or_default(),
            eos: cfg.eos_token.clone().unwrap_or_default(),
            generation,
        })
    }

    /// Renders `messages` (a JSON array of `{role, content}`).
    pub fn render(&self, messages: &[Json], add_generation_prompt: bool) -> Result<String> {
        Ok(self
            .render_tracked(messages, add_generation_prompt, &Extra::default())?
            .0)
    }

    /// Whether the template marks what the model generates with `{% generation %}` blocks.
    pub fn has_generation_blocks(&self) -> bool {
        self.generation
    }

    /// Renders `messages`, with the byte spans that `{% generation %}` blocks wrote.
    pub fn render_tracked(
        &self,
        messages: &[Json],
        add_generation_prompt: bool,
        extra: &Extra,
    ) -> Result<(String, Vec<(usize, usize)>)> {
        let text = self.render_raw(messages, add_generation_prompt, extra)?;
        Ok(take_generation_spans(&text))
    }

    /// The template's context, as transformers' `apply_chat_template` makes it: the special
    /// tokens, `documents` (none), the template variables (which may override them), the
    /// messages (their reasoning aliased, [`alias_reasoning`]), the tools and
    /// `add_generation_prompt`.
    fn context(&self, messages: &[Json], add_generation_prompt: bool, extra: &Extra) -> Value {
        let mut ctx: std::collections::BTreeMap<String, Value> = [
            ("bos_token".to_string(), Value::from(self.bos.clone())),
            ("eos_token".to_string(), Value::from(self.eos.clone())),
            ("documents".to_string(), Value::from(())),
        ]
        .into_iter()
        .collect();
        for (k, v) in &extra.kwargs {
            ctx.insert(k.clone(), Value::from_serialize(v));
        }
        let messages: Vec<Json> = messages.iter().map(alias_reasoning).collect();
        ctx.insert("messages".into(), Value::from_serialize(&messages));
        let tools = extra
            .tools
            .as_ref()
            .map_or(Value::from(()), Value::from_serialize);
        ctx.insert("tools".into(), tools);
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        Value::from_serialize(&ctx)
    }

    fn render_raw(
        &self,
        messages: &[Json],
        add_generation_prompt: bool,
        extra: &Extra,
    ) -> Result<String> {
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Config(format!("chat template: {e}")))?;
        let mut out = Bounded(vec![]);
        t.render_captured_to(
            self.context(messages, add_generation_prompt, extra),
            &mut out,
        )
        .map_err(|e| {
            match e.kind() {
                ErrorKind::OutOfFuel => {
                    return Error::Config(format!("the chat template runs away on this conversation: it did not finish within {TEMPLATE_FUEL} steps (loops nested over the messages?)"))
                }
                ErrorKind::WriteFailure => {
                    return Error::Config(format!("the chat template writes more than {} MiB for this conversation", TEMPLATE_OUTPUT >> 20))
                }
                _ => {}
            }
            let mut msg = format!("the chat template failed: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            Error::Config(msg)
        })?;
        String::from_utf8(out.0)
            .map_err(|_| Error::Config("the chat template wrote text that is not UTF-8".into()))
    }
}

impl ChatTemplate {
    /// Renders the template over a row's fields (`prompt_template`, `completion_template`):
    /// each field of the JSON object `row` is a variable, beside `bos_token` and `eos_token`.
    pub fn render_row(&self, row: &Json) -> Result<String> {
        let extra = Extra {
            tools: None,
            kwargs: row.as_object().cloned().unwrap_or_default(),
        };
        Ok(self.render_tracked(&[], false, &extra)?.0)
    }

    /// What the template writes after an assistant message's content (end-of-turn text and
    /// what follows it), found by rendering a probe conversation.
    fn after_assistant(&self) -> Option<String> {
        let marker = "pzt-end-of-turn-probe";
        let msgs: Vec<Json> = vec![
            serde_json::json!({"role": "user", "content": "hi"}),
            serde_json::json!({"role": "assistant", "content": marker}),
        ];
        let text = self.render(&msgs, false).ok()?;
        Some(text[text.find(marker)? + marker.len()..].to_string())
    }

    /// The text of the token the template ends an assistant turn with (`<|im_end|>`, ...).
    pub fn end_of_turn_text(&self, tok: &Tokenizer) -> Option<String> {
        let after = self.after_assistant()?;
        let (_, offsets) = tok.encode_with_offsets(&after).ok()?;
        offsets.first().map(|o| after[..o.1].to_string())
    }

    /// The token the template ends an assistant turn with (`<|im_end|>`, `<|eot_id|>`, ...):
    /// the first token of what it writes after an assistant message's content.
    pub fn end_of_turn(&self, tok: &Tokenizer) -> Option<i64> {
        tok.encode(&self.after_assistant()?).ok()?.first().copied()
    }
}

/// A conversation as tokens: ids, the loss mask (1 on assistant content and end-of-turn
/// tokens, or on every token with `all`), and the prompt length (up to the last assistant
/// turn's content, for generation-based evaluation).
pub struct Rendered {
    pub ids: Vec<i64>,
    pub mask: Vec<u8>,
    pub prompt_len: usize,
}

/// What a row gives the template besides its messages: `tools` (a list of JSON schemas) and
/// template variables (`[data] template_kwargs`, over which a row's `chat_template_kwargs`
/// go), as transformers' `apply_chat_template(messages, tools=..., **kwargs)` passes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extra {
    pub tools: Option<Json>,
    pub kwargs: serde_json::Map<String, Json>,
}

/// Renders and tokenizes one conversation (as `apply_chat_template(messages, tokenize=True)`
/// does: the template writes any BOS itself, so no special tokens are added), with the loss on
/// the assistant turns (or on every token, with `all`).
pub fn conversation(
    t: &ChatTemplate,
    tok: &Tokenizer,
    messages: &[Json],
    all: bool,
) -> Result<Rendered> {
    let on = if all {
        TrainOn::All
    } else {
        TrainOn::Assistant
    };
    conversation_with(t, tok, messages, on, &Extra::default())
}

/// A conversation rendered with `extra`, the loss on the tokens `train_on` says.
pub fn conversation_with(
    t: &ChatTemplate,
    tok: &Tokenizer,
    messages: &[Json],
    train_on: TrainOn,
    extra: &Extra,
) -> Result<Rendered> {
    let (full, generated) = t.render_tracked(messages, false, extra)?;
    let (ids, offsets) = tok.encode_with_offsets(&full)?;
    let last_only = |s: Vec<(usize, usize)>| match train_on {
        TrainOn::Last => s.last().map(|l| vec![*l]).unwrap_or_default(),
        _ => s,
    };
    let (mut mask, last) = if t.has_generation_blocks() {
        let mask = generation_mask(&offsets, &last_only(generated.clone()));
        (mask, generated.last().map(|s| s.0))
    } else {
        let r = Renderer { t, extra };
        let spans = match turns_by_prefixes(&r, messages, &full)? {
            Some(s) => s,
            None => turns_in_place(&r, tok, messages, &full)?,
        };
        let last = spans.last().map(|s| s.0);
        let spans = last_only(spans);
        let inside = |o: &(usize, usize)| spans.iter().any(|&(a, b)| o.0 >= a && o.0 < b);
        let mask: Vec<u8> = offsets.iter().map(|o| u8::from(inside(o))).collect();
        (mask, last)
    };
    if train_on == TrainOn::All {
        mask.iter_mut().for_each(|m| *m = 1);
    }
    let prompt_len = match last {
        Some(a) => offsets.iter().take_while(|o| o.0 < a).count(),
        None => 0,
    };
    Ok(Rendered {
        ids,
        mask,
        prompt_len,
    })
}

/// transformers' `return_assistant_tokens_mask`: for each span a `{% generation %}` block
/// wrote, the tokens from the one holding its first character to the one holding its last
/// (to the end when that is the first token or none), stopping at a span that starts past the
/// tokens.
fn generation_mask(offsets: &[(usize, usize)], spans: &[(usize, usize)]) -> Vec<u8> {
    let at = |pos: usize| offsets.iter().position(|o| o.0 <= pos && pos < o.1);
    let mut mask = vec![0u8; offsets.len()];
    for &(a, b) in spans {
        let Some(first) = at(a) else {
            break;
        };
        let end = match b.checked_sub(1).and_then(at) {
            Some(e) if e > 0 => e + 1,
            _ => offsets.len(),
        };
        for m in mask.iter_mut().take(end).skip(first) {
            *m = 1;
        }
    }
    mask
}

/// A template with a row's extras: what renders the prefixes of its conversation.
struct Renderer<'a> {
    t: &'a ChatTemplate,
    extra: &'a Extra,
}

impl Renderer<'_> {
    fn render(&self, messages: &[Json], add_generation_prompt: bool) -> Result<String> {
        Ok(self
            .t
            .render_tracked(messages, add_generation_prompt, self.extra)?
            .0)
    }
}

/// The assistant turns as the differences of renderings of prefixes (see the module docs), or
/// None when the template does not render the conversation as the concatenation of its turns.
fn turns_by_prefixes(
    t: &Renderer<'_>,
    messages: &[Json],
    full: &str,
) -> Result<Option<Vec<(usize, usize)>>> {
    let mut spans = vec![];
    for (k, m) in messages.iter().enumerate() {
        if m.get("role").and_then(|r| r.as_str()) != Some("assistant") {
            continue;
        }
        let head = t.render(&messages[..k], true)?;
        let upto = t.render(&messages[..=k], false)?;
        if !full.starts_with(&upto) || !upto.starts_with(&head) {
            return Ok(None);
        }
        spans.push((head.len(), upto.len()));
    }
    Ok(Some(spans))
}

/// The assistant turns where they stand in the rendering `full` of a conversation that is
/// not the concatenation of its turns: each from the end of its role header (the generation
/// prompt, as far as the rendering agrees with it, after the rendering of the messages before
/// it; else the start of its content) to the end of the end-of-turn token after its content.
fn turns_in_place(
    t: &Renderer<'_>,
    tok: &Tokenizer,
    messages: &[Json],
    full: &str,
) -> Result<Vec<(usize, usize)>> {
    let eot = t.t.end_of_turn_text(tok).unwrap_or_default();
    let mut spans = vec![];
    let mut cursor = 0;
    for (k, m) in messages.iter().enumerate() {
        if m.get("role").and_then(|r| r.as_str()) != Some("assistant") {
            continue;
        }
        let before = t.render(&messages[..k], false)?;
        let header = match full.strip_prefix(before.as_str()) {
            Some(rest) if before.len() >= cursor => {
                let head = t.render(&messages[..k], true)?;
                let prompt = head.strip_prefix(before.as_str()).unwrap_or("");
                let same = prompt
                    .char_indices()
                    .zip(rest.chars())
                    .take_while(|((_, a), b)| a == b)
                    .last()
                    .map_or(0, |((i, a), _)| i + a.len_utf8());
                Some(before.len() + same)
            }
            _ => None,
        };
        let content = m
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or("")
            .trim();
        let from = header.unwrap_or(cursor);
        let found = (!content.is_empty())
            .then(|| full[from..].find(content).map(|i| from + i))
            .flatten();
        let Some(start) = header.or(found) else {
            if content.is_empty() {
                // An empty answer where no header marks its place: nothing of it to find.
                continue;
            }
            return Err(Error::Config(format!(
                "message {k} (assistant): its content is not in the chat template's rendering of the conversation, so its tokens cannot be found; use train_on = \"all\""
            )));
        };
        let after = found.map_or(start, |c| c + content.len()).max(start);
        let end = match (eot.is_empty(), full[after..].find(eot.as_str())) {
            (false, Some(i)) => after + i + eot.len(),
            _ => after,
        };
        spans.push((start, end));
        cursor = end;
    }
    Ok(spans)
}

/// Checks one line's messages: a non-empty array of objects with a string `role` and a
/// `content`.
pub fn check_messages(v: &Json) -> std::result::Result<&[Json], String> {
    let a = v
        .as_array()
        .ok_or_else(|| "the messages are not an array".to_string())?;
    if a.is_empty() {
        return Err("the conversation has no messages".into());
    }
    for (i, m) in a.iter().enumerate() {
        if m.get("role").and_then(|r| r.as_str()).is_none() {
            return Err(format!("message {i} has no string `role`"));
        }
        if m.get("content").is_none() {
            return Err(format!("message {i} has no `content`"));
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_loops_check_their_iterable_and_the_rest_is_left_as_it_is() {
        let cases = [
            ("for x in xs", Some("for x in (xs)|pzt_iterable")),
            (
                " for k, v in tool.items() if k != \"return\" ",
                Some("for k, v in (tool.items())|pzt_iterable if k != \"return\""),
            ),
            (
                "for m in messages[::-1]",
                Some("for m in (messages[::-1])|pzt_iterable"),
            ),
            (
                "for x in ['if', \"in\", 'it\\'s'] recursive",
                Some("for x in (['if', \"in\", 'it\\'s'])|pzt_iterable recursive"),
            ),
            (
                "for x in a.if + b|items if x.in",
                Some("for x in (a.if + b|items)|pzt_iterable if x.in"),
            ),
            ("endfor", None),
            ("for_each in x", None),
            ("set x = 1", None),
            // Cut at a `%}` in a string: not read, left as it is.
            ("for x in ['", None),
            ("for x in a)", None),
        ];
        for (body, want) in cases {
            assert_eq!(checked_for(body).as_deref(), want, "{body}");
        }
        let (out, generation) = rewrite_tags(
            "{%- for m in messages -%}{% generation %}{{ m }}{%- endgeneration +%}{% endfor %}\
             {% raw %}{% for x in y %}{% generation %}{% endraw %}{ {# {% for c in d %} #}\
             {{ '{% for e in f %}' }}{{ 'x' ~ '}}' }}{%for g in h%}",
        );
        assert!(generation);
        assert_eq!(
            out,
            "{%- for m in (messages)|pzt_iterable -%}{% filter pzt_generation %}{{ m }}\
             {%- endfilter +%}{% endfor %}{% raw %}{% for x in y %}{% generation %}{% endraw %}\
             { {# {% for c in d %} #}{{ '{% for e in f %}' }}{{ 'x' ~ '}}' }}\
             {% for g in (h)|pzt_iterable %}"
        );
        let (out, _) = rewrite_tags("{{ x }");
        assert_eq!(out, "{{ x }");
    }
}
