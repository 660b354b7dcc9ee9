//! Claude Code's transcripts: `~/.claude/projects/<project>/<session>.jsonl`,
//! where `<project>` is the working directory with every character but
//! letters and digits turned into `-` (measured with Claude Code 2.1.328).
//! `launch --resume/--continue` and `sessions --all` read them.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::home_dir;

pub struct Transcript {
    pub session_id: String,
    pub modified: SystemTime,
    pub path: PathBuf,
}

/// Where Claude Code keeps the transcripts of sessions started in `cwd`.
pub fn project_dir(cwd: &Path) -> PathBuf {
    let cwd = cwd.canonicalize().unwrap_or_else(|_| cwd.to_path_buf());
    let name: String = cwd.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    home_dir().join(".claude").join("projects").join(name)
}

/// The sessions of `cwd`, newest first.
pub fn list(cwd: &Path) -> Vec<Transcript> {
    let entries = std::fs::read_dir(project_dir(cwd)).into_iter().flatten().flatten();
    let mut found: Vec<Transcript> = entries
        .filter_map(|e| {
            let path = e.path();
            let id = path.file_name()?.to_str()?.strip_suffix(".jsonl")?;
            crate::discovery::parse_session_id(id).ok()?;
            let modified = e.metadata().ok()?.modified().ok()?;
            Some(Transcript { session_id: id.to_string(), modified, path })
        })
        .collect();
    found.sort_by_key(|t| std::cmp::Reverse(t.modified));
    found
}

/// The first thing the user typed, on one line: the first `user` entry
/// whose content is text.
pub fn first_prompt(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        if entry["type"] != "user" {
            return None;
        }
        let content = &entry["message"]["content"];
        let text = content.as_str().or_else(|| content.as_array()?.iter().find_map(|b| b["text"].as_str()))?;
        Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn project_dirs_are_the_path_with_dashes() {
        let dir = super::project_dir(std::path::Path::new("/no/such/dir.d/x_y"));
        assert!(dir.ends_with(".claude/projects/-no-such-dir-d-x-y"), "{}", dir.display());
    }
}
