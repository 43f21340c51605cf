//! `diverged.json` in the run directory: when the NaN watchdog stops a run it leaves the step,
//! the reason and a hash of the resolved recipe. Resuming the same recipe from a checkpoint
//! before that step replays the same numbers into the same NaN, so it is refused until
//! something changes (a lower learning rate, clipping, another seed); a changed recipe resumes
//! and the marker is removed.

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

#[cfg(test)]
mod tests {
    use super::*;

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
