//! What a resume must agree with before it continues a run.
//!
//! - **The data.** A checkpoint's cursor counts examples of the data it was trained on; resuming
//!   it on other data (another `seq_len`, `pack`, file list, template, ...) would continue a run
//!   that never existed. The `[data]` table of the checkpoint's `recipe.toml` is compared with
//!   the run's own, key by key (`cache_dir`, which changes where prepared data is kept and not
//!   what it is, aside); a difference is bad input that names the keys.
//! - **A divergence** ([`crate::run::divergence`]).

use crate::base::{Error, Result};
use std::path::Path;

/// A TOML value shown short.
fn shown(v: Option<&toml::Value>) -> String {
    match v {
        None => "(unset)".into(),
        Some(v) => crate::base::text::clip(&v.to_string(), 120).into_owned(),
    }
}

/// Refuses to resume the checkpoint `dir` with a `[data]` table other than its own.
pub fn check_same_data(dir: &Path, recipe_toml: &str) -> Result<()> {
    let Ok(text) = crate::base::files::read_small_file(&dir.join("recipe.toml")) else {
        return Ok(()); // the checkpoint's own checks say what is wrong with it
    };
    let data = |t: &str| -> Option<toml::Table> {
        let v: toml::Table = toml::from_str(t).ok()?;
        let mut d = v.get("data")?.as_table()?.clone();
        d.remove("cache_dir");
        Some(d)
    };
    let (Some(was), Some(now)) = (data(&text), data(recipe_toml)) else {
        return Ok(());
    };
    if was == now {
        return Ok(());
    }
    let keys: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
    let changes: Vec<String> = keys
        .into_iter()
        .filter(|k| was.get(*k) != now.get(*k))
        .map(|k| format!("`{k}` {} -> {}", shown(was.get(k)), shown(now.get(k))))
        .collect();
    Err(Error::Config(format!(
        "{} was trained on other data: [data] {}. Resuming would continue on data the run never saw; put [data] back as it was, or train into another out_dir (`--set run.out_dir=...`) to start over",
        dir.display(),
        changes.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_change_is_named_and_cache_dir_is_not_one() -> Result<()> {
        let d = std::env::temp_dir().join(format!("pzt-resume-checks-{}", std::process::id()));
        std::fs::create_dir_all(&d).map_err(|e| Error::Config(e.to_string()))?;
        let was = "[run]\nname = \"x\"\n[data]\nseq_len = 12\npack = false\ncache_dir = \"a\"\n";
        std::fs::write(d.join("recipe.toml"), was).map_err(|e| Error::Config(e.to_string()))?;
        check_same_data(&d, &was.replace("\"a\"", "\"b\""))?;
        let e = check_same_data(&d, &was.replace("12", "16").replace("false", "true"));
        let m = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(m.contains("`seq_len` 12 -> 16"), "{m}");
        assert!(m.contains("`pack` false -> true"), "{m}");
        let _ = std::fs::remove_dir_all(&d);
        Ok(())
    }
}
