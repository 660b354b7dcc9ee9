//! The `opzero-host` command line. Errors leave here as a message on stderr
//! and a non-zero exit; stdout is reserved for MCP under `serve`.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use opzero_host::cli::{client, launcher};
use opzero_host::{discovery, serve, UserError};

#[derive(Parser)]
#[command(name = "opzero-host", version, about = "Talk to a live Claude Code session from your phone: a native channel host")]
struct Cli {
    /// Config file (default: ./opzero.toml if present, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the channel host (Claude Code spawns this over stdio).
    Serve {
        /// Session UUID (default: $OPZERO_CHANNEL_SESSION_ID).
        #[arg(long, value_name = "UUID")]
        session_id: Option<String>,
    },
    /// Start claude in DIR with this host attached as its channel.
    Launch(launcher::Launch),
    /// List live sessions (and delete files of dead ones).
    Sessions {
        /// Also list this directory's Claude Code sessions that have no live host.
        #[arg(long)]
        all: bool,
    },
    /// Send a message into a session, as the phone would.
    Send {
        /// Session id or a unique prefix of it.
        session: String,
        text: String,
        #[arg(long, value_name = "ID")]
        chat_id: Option<String>,
        /// Attach a file (repeat for several).
        #[arg(long = "file", value_name = "PATH")]
        files: Vec<PathBuf>,
        /// Don't wait for Claude Code to take it (by default `send` waits,
        /// and fails if it was not taken).
        #[arg(long)]
        no_wait: bool,
    },
    /// Follow a session's replies and permission prompts.
    Tail {
        session: String,
        /// Print each event's raw JSON.
        #[arg(long)]
        json: bool,
        /// Start after this event id (0: everything still buffered).
        #[arg(long, value_name = "ID")]
        since: Option<u64>,
        /// Download the files of replies into this directory (never
        /// overwriting a file already there).
        #[arg(long, value_name = "DIR")]
        save: Option<PathBuf>,
    },
    /// Sign a browser in to the session's chat page: prints a one-time
    /// link (valid 60 s) and opens it where there is a desktop.
    Open {
        session: String,
        /// Where the phone reaches the bridge, if not 127.0.0.1 (a tunnel:
        /// its name must be in [bridge] allowed_hosts).
        #[arg(long, value_name = "URL")]
        base: Option<String>,
        /// Only print the link.
        #[arg(long)]
        no_browser: bool,
    },
    /// Show a session's state.
    Status { session: String },
    /// Check a config file and the filters it names.
    Validate {
        /// Default: the --config file, else ./opzero.toml
        file: Option<PathBuf>,
    },
}

/// `OPZERO_LOG` wins; otherwise `serve` logs at info (its stderr is a log
/// Claude Code keeps) and the commands a person types only warn.
fn init_logging(default: tracing::Level) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{filter, fmt, Layer};
    let level: tracing::Level = std::env::var("OPZERO_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(default);
    // Events only: the log shows no spans, and rmcp's (one per message
    // sent) then cost nothing.
    let wanted = filter::filter_fn(move |m| m.is_event() && *m.level() <= level);
    let log = fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).with_target(false);
    tracing_subscriber::registry().with(log.with_filter(wanted)).init();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Where the config's discovery files are.
fn channels_dir(config: Option<&Path>) -> Result<PathBuf, UserError> {
    Ok(discovery::channels_dir(&serve::config(config)?))
}

/// The live session `session` names, in the config's discovery directory.
fn find(config: Option<&Path>, session: &str) -> Result<discovery::Record, UserError> {
    client::find(&channels_dir(config)?, session)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(match cli.command {
        Command::Serve { .. } => tracing::Level::INFO,
        _ => tracing::Level::WARN,
    });
    match run(cli.command, cli.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(report(&e)),
    }
}

/// Says what went wrong on stderr; the exit code is 2 for a problem the
/// user can fix as told, 1 for anything else.
fn report(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<UserError>() {
        Some(user) => {
            eprintln!("opzero-host: {user}");
            2
        }
        None => {
            eprintln!("opzero-host: {e:#}");
            1
        }
    }
}

fn run(command: Command, config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = config.as_deref();
    match command {
        Command::Serve { session_id } => {
            let session_id = serve::session_id(session_id.as_deref())?;
            let config = serve::config(config)?;
            let result = runtime().block_on(serve::run(session_id, config));
            // Don't wait for the runtime's blocking threads (a stdin read may
            // still be parked there): the discovery file is gone, we are done.
            std::process::exit(match result {
                Ok(()) => 0,
                Err(e) => report(&e).into(),
            });
        }
        Command::Launch(launch) => {
            let plan = launcher::plan(launcher::Launch { config: config.map(Path::to_path_buf), ..launch })?;
            Err(launcher::exec(plan).into())
        }
        Command::Sessions { all } => Ok(client::sessions(&channels_dir(config)?, all)?),
        Command::Send { session, text, chat_id, files, no_wait } => {
            let entry = find(config, &session)?;
            runtime().block_on(client::send(&entry, &text, chat_id.as_deref(), &files, !no_wait))
        }
        Command::Tail { session, json, since, save } => {
            let entry = find(config, &session)?;
            runtime().block_on(client::tail(&entry, json, since, save.as_deref()))
        }
        Command::Open { session, base, no_browser } => {
            let entry = find(config, &session)?;
            runtime().block_on(client::open(&entry, base.as_deref(), !no_browser))
        }
        Command::Status { session } => runtime().block_on(client::status(&find(config, &session)?)),
        Command::Validate { file } => {
            let file = file.or(config.map(Path::to_path_buf)).unwrap_or_else(|| PathBuf::from("opzero.toml"));
            if !file.is_file() {
                return Err(UserError(format!("{}: no such config file", file.display())).into());
            }
            let (config, filters) = serve::check(Some(&file))?;
            let names = filters.names();
            println!(
                "{}: ok ({} filter{}{}; permission relay {})",
                file.display(),
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) },
                if config.permissions.relay { "on" } else { "off" },
            );
            Ok(())
        }
    }
}
