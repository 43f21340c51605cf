//! What a resume must agree with before it continues a run.
//!
//! - **The data.** A checkpoint's cursor counts examples of the data it was trained on; resuming
//!   it on other data (another `seq_len`, `pack`, file list, template, ...) would continue a run
//!   that never existed. The `[data]` table of the checkpoint's `recipe.toml` is compared with
//!   the run's own, key by key (`cache_dir`, which changes where prepared data is kept and not
//!   what it is, aside); a difference is bad input that names the keys.
//! - **A divergence.** When the NaN watchdog stops a run it leaves `diverged.json` in the run
//!   directory (the step, the reason and a hash of the resolved recipe). Resuming the same
//!   recipe from a checkpoint before that step replays the same numbers into the same NaN, so it
//!   is refused until something changes (a lower learning rate, clipping, another seed); a
//!   changed recipe resumes and the marker is removed.

use crate::base::{Error, Result};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The marker a diverged run leaves in its run directory.
pub fn diverged_marker(out_dir: &Path) -> PathBuf {
    out_dir.join("diverged.json")
}

fn recipe_hash(recipe_toml: &str) -> String {
    format!("{:016x}", crate::base::seed::fnv1a(recipe_toml.as_bytes()))
}

/// Records that the run diverged at `step` (best effort: a failure to write it loses only the
/// refusal of a later identical resume).
pub fn record_divergence(out_dir: &Path, step: u64, reason: &str, recipe_toml: &str) {
    let j = json!({"step": step, "reason": reason, "recipe": recipe_hash(recipe_toml)});
    let text = serde_json::to_string_pretty(&j).unwrap_or_default();
    let _ = crate::base::outputs::write(&diverged_marker(out_dir), text.as_bytes());
}

/// The step and reason of a recorded divergence.
pub fn divergence(out_dir: &Path) -> Option<(u64, String, String)> {
    let text = crate::base::files::read_small_file(&diverged_marker(out_dir)).ok()?;
    let j: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((
        j["step"].as_u64()?,
        j["reason"].as_str().unwrap_or("").to_string(),
        j["recipe"].as_str().unwrap_or("").to_string(),
    ))
}

/// Refuses to resume the recipe `recipe_toml` from step `from` of a run that diverged after it
/// with the same recipe; forgets the divergence when the recipe changed.
pub fn check_divergence(out_dir: &Path, from: u64, recipe_toml: &str) -> Result<()> {
    let Some((step, reason, hash)) = divergence(out_dir) else {
        return Ok(());
    };
    if step > from && hash == recipe_hash(recipe_toml) {
        return Err(Error::Config(format!(
            "this run stopped at step {step} ({reason}); resuming the same recipe from step {from} would repeat it bit for bit. Change what made it diverge (e.g. a lower `optim.lr`, `optim.clip_grad_norm`, `train.precision`) and train again, or remove {} to retry as it is",
            diverged_marker(out_dir).display()
        )));
    }
    let _ = std::fs::remove_file(diverged_marker(out_dir));
    Ok(())
}

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

    #[test]
    fn a_divergence_refuses_the_same_recipe_only() -> Result<()> {
        let d = std::env::temp_dir().join(format!("pzt-diverged-{}", std::process::id()));
        std::fs::create_dir_all(&d).map_err(|e| Error::Config(e.to_string()))?;
        record_divergence(&d, 7, "the loss is NaN", "recipe A");
        assert!(check_divergence(&d, 6, "recipe A").is_err());
        assert!(check_divergence(&d, 8, "recipe A").is_ok());
        record_divergence(&d, 7, "the loss is NaN", "recipe A");
        assert!(check_divergence(&d, 6, "recipe B").is_ok());
        assert!(!diverged_marker(&d).exists(), "a changed recipe forgets it");
        let _ = std::fs::remove_dir_all(&d);
        Ok(())
    }
}
