//! `opzero-host launch`: starts `claude` wired to this executable's `serve`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::channel::{EDIT_TOOL, REPLY_TOOL, SERVER_NAME};
use crate::serve::SESSION_ENV;
use crate::transcripts;
use crate::UserError;

/// Channels need Claude Code 2.1.80 or newer.
pub const MIN_CLAUDE: (u64, u64, u64) = (2, 1, 80);

/// `launch`'s arguments, as the command line gives them.
#[derive(clap::Args)]
pub struct Launch {
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    #[arg(long, value_name = "M")]
    pub model: Option<String>,
    /// Session UUID (default: a new random one).
    #[arg(long, value_name = "UUID", conflicts_with_all = ["resume", "continue_session"])]
    pub session_id: Option<String>,
    /// Resume this session of DIR (see `opzero-host sessions --all`), with the channel.
    #[arg(long, value_name = "UUID", conflicts_with = "continue_session")]
    pub resume: Option<String>,
    /// Resume the newest session of DIR, with the channel.
    #[arg(long = "continue")]
    pub continue_session: bool,
    /// The global `--config`.
    #[arg(skip)]
    pub config: Option<PathBuf>,
    /// Passed to claude as is.
    #[arg(last = true, value_name = "CLAUDE_ARGS")]
    pub claude_args: Vec<OsString>,
}

/// What `launch` will exec, computed without side effects (so it can be shown and tested).
#[derive(Debug)]
pub struct Plan {
    pub claude: PathBuf,
    pub dir: PathBuf,
    pub session_id: String,
    pub args: Vec<OsString>,
}

/// `claude` from `$CLAUDE_BIN`, else from `PATH`.
pub fn find_claude() -> Result<PathBuf, UserError> {
    if let Some(bin) = std::env::var_os("CLAUDE_BIN").filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("claude"))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            UserError(
                "claude was not found on PATH. Install Claude Code 2.1.80 or newer (npm install -g @anthropic-ai/claude-code) and try again.".into(),
            )
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `2.1.328 (Claude Code)` → (2, 1, 328).
pub fn parse_version(out: &str) -> Option<(u64, u64, u64)> {
    let word = out.split_whitespace().next()?;
    let mut parts = word.split(['.', '-', '+']).map(|p| p.parse::<u64>());
    Some((parts.next()?.ok()?, parts.next()?.ok()?, parts.next()?.ok()?))
}

fn check_version(claude: &Path) -> Result<(), UserError> {
    let out = Command::new(claude)
        .arg("--version")
        .output()
        .map_err(|e| UserError(format!("cannot run {} --version: {e}", claude.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (a, b, c) = MIN_CLAUDE;
    match parse_version(&text) {
        Some(v) if v >= MIN_CLAUDE => Ok(()),
        Some((x, y, z)) => Err(UserError(format!(
            "{} is Claude Code {x}.{y}.{z}; channels need {a}.{b}.{c} or newer. Update it (claude update, or npm install -g @anthropic-ai/claude-code) and try again.",
            claude.display()
        ))),
        None => Err(UserError(format!(
            "cannot tell which version {} is (it printed {:?}); channels need Claude Code {a}.{b}.{c} or newer",
            claude.display(),
            text.trim()
        ))),
    }
}

pub fn plan(launch: Launch) -> Result<Plan, UserError> {
    let claude = find_claude()?;
    check_version(&claude)?;
    let here = std::env::current_dir().map_err(|e| UserError(format!("no current directory: {e}")))?;
    let dir = launch.cwd.map_or_else(|| here.clone(), |d| here.join(d));
    if !dir.is_dir() {
        return Err(UserError(format!("--cwd {}: not a directory", dir.display())));
    }
    // Claude Code's own --continue names the server a new id, not the
    // transcript's: the newest transcript is found here and resumed by id.
    let resume = match (launch.resume, launch.continue_session) {
        (Some(id), _) => {
            let id = crate::serve::session_id(Some(&id))?;
            let path = transcripts::project_dir(&dir).join(format!("{id}.jsonl"));
            if !path.is_file() {
                return Err(UserError(format!(
                    "no session {id} to resume in {}: looked for {} (see `opzero-host sessions --all`)",
                    dir.display(),
                    path.display()
                )));
            }
            Some(id)
        }
        (None, true) => Some(transcripts::list(&dir).into_iter().next().map(|t| t.session_id).ok_or_else(|| {
            let looked = transcripts::project_dir(&dir);
            UserError(format!("no session to continue in {}: {} holds no transcript", dir.display(), looked.display()))
        })?),
        (None, false) => None,
    };
    let session_id = match (&resume, launch.session_id) {
        (Some(id), _) => id.clone(),
        (None, Some(s)) => crate::serve::session_id(Some(&s))?,
        (None, None) => uuid::Uuid::new_v4().to_string(),
    };
    // The config serve will use: --config, else ./opzero.toml here. Checked
    // now so mistakes show in this terminal, not as a dead MCP server.
    let config = launch.config.map(|c| here.join(c))
        .or_else(|| Some(here.join("opzero.toml")).filter(|p| p.is_file()));
    if let Some(c) = &config {
        crate::serve::check(Some(c))?;
    }
    let exe = std::env::current_exe()
        .map_err(|e| UserError(format!("cannot find this executable: {e}")))?;

    let mut serve_args = vec![
        "serve".to_string(),
        "--session-id".to_string(),
        session_id.clone(),
    ];
    if let Some(c) = &config {
        serve_args.push("--config".into());
        serve_args.push(c.display().to_string());
    }
    let mcp = json!({
        "mcpServers": {
            SERVER_NAME: {
                "command": exe.display().to_string(),
                "args": serve_args,
                "env": { SESSION_ENV: session_id },
            }
        }
    });
    let mut args: Vec<OsString> = vec![
        if resume.is_some() { "--resume" } else { "--session-id" }.into(),
        session_id.clone().into(),
        "--mcp-config".into(),
        mcp.to_string().into(),
        "--dangerously-load-development-channels".into(),
        format!("server:{SERVER_NAME}").into(),
        // Otherwise every reply waits at a terminal prompt while the user is on their phone.
        "--allowedTools".into(),
        format!("mcp__{SERVER_NAME}__{REPLY_TOOL},mcp__{SERVER_NAME}__{EDIT_TOOL}").into(),
    ];
    if let Some(m) = launch.model {
        args.push("--model".into());
        args.push(m.into());
    }
    args.extend(launch.claude_args);
    Ok(Plan {
        claude,
        dir,
        session_id,
        args,
    })
}

/// Replaces this process with claude; returns only on failure.
pub fn exec(plan: Plan) -> UserError {
    let short = &plan.session_id[..8];
    eprintln!(
        "opzero-host: session {} in {} (reach it with `opzero-host send {short} \"hi\"` and `opzero-host tail {short}`)",
        plan.session_id,
        plan.dir.display()
    );
    let err = Command::new(&plan.claude)
        .args(&plan.args)
        .current_dir(&plan.dir)
        .env(SESSION_ENV, &plan.session_id)
        .exec();
    UserError(format!("cannot start {}: {err}", plan.claude.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("2.1.328 (Claude Code)\n"), Some((2, 1, 328)));
        assert_eq!(parse_version("2.1.80"), Some((2, 1, 80)));
        assert_eq!(parse_version("2.2.0-beta.1"), Some((2, 2, 0)));
        assert_eq!(parse_version("claude"), None);
        assert!(parse_version("2.1.79").unwrap() < MIN_CLAUDE);
        assert!(parse_version("10.0.0").unwrap() > MIN_CLAUDE);
    }
}
