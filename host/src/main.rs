//! The `opzero-host` command line. Errors leave here as a message on stderr
//! and a non-zero exit; stdout is reserved for MCP under `serve`.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use opzero_host::cli::{client, filter_test, launcher, new_filter};
use opzero_host::config::HubConfig;
use opzero_host::{discovery, hub, serve, UserError};

#[derive(Parser)]
#[command(name = "opzero-host", version, about = "Talk to a live Claude Code session from your phone: a native channel host")]
struct Cli {
    /// Config file (default: ./opzero.toml if present, else built-in
    /// defaults; for `hub`, $OPZERO_HOME/hub.toml if present).
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
    /// Sign a browser in to the chat page: prints a one-time link (valid
    /// 60 s), also as a QR code on stderr, and opens it where there is a
    /// desktop. With no SESSION: the hub's page, where one runs (every
    /// session behind one sign-in), else the only live session's.
    Open {
        session: Option<String>,
        /// Where the phone reaches the bridge (or the hub), if not
        /// 127.0.0.1 (a tunnel: its name must be in [bridge] allowed_hosts,
        /// or the hub's allowed_hosts).
        #[arg(long, value_name = "URL")]
        base: Option<String>,
        /// Only print the link.
        #[arg(long)]
        no_browser: bool,
        /// Do not print the link as a QR code (on stderr).
        #[arg(long)]
        no_qr: bool,
    },
    /// Show a session's state.
    Status { session: String },
    /// Serve every live session on one port, behind one sign-in (its
    /// config: --config FILE, else $OPZERO_HOME/hub.toml if present).
    Hub {
        /// Port on 127.0.0.1 (default: `port` in the config, else 4870;
        /// 0 lets the system pick).
        #[arg(long, value_name = "P")]
        port: Option<u16>,
    },
    /// Check a config file and the filters it names (a file named
    /// hub.toml, or given with --hub, is checked as the hub's config).
    Validate {
        /// Default: the --config file, else ./opzero.toml
        file: Option<PathBuf>,
        /// Check FILE as the hub's config.
        #[arg(long)]
        hub: bool,
    },
    /// Make a filter crate in DIR/NAME: Cargo.toml, src/lib.rs with
    /// pass-through hooks to change, a unit test, and a README with the
    /// command that builds it and the [[filter]] block for opzero.toml.
    NewFilter(new_filter::NewFilter),
    /// Work with one filter component.
    Filter {
        #[command(subcommand)]
        command: FilterCommand,
    },
}

#[derive(Subcommand)]
enum FilterCommand {
    /// Call one hook of a component, in serve's sandbox and limits: the
    /// verdict as JSON on stdout, the filter's log on stderr; exit status 0
    /// for pass, relay or allow, 1 for drop, reject or deny, 2 for an error.
    Test(filter_test::Test),
}

/// `OPZERO_LOG` wins; otherwise `serve` logs at info (its stderr is a log
/// Claude Code keeps) and the commands a person types only warn.
fn init_logging(default: tracing::Level) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{filter, fmt, Layer};
    let level: tracing::Level = std::env::var("OPZERO_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(default);
    // No spans: the log shows none, and rmcp's (one per message sent)
    // then cost nothing. Events, and the hints of `enabled!` (a filter's
    // `log` asks it before it logs).
    let wanted = filter::filter_fn(move |m| !m.is_span() && *m.level() <= level);
    let log = fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).with_target(false);
    tracing_subscriber::registry().with(log.with_filter(wanted)).init();
}

fn runtime() -> tokio::runtime::Runtime {
    serve::runtime().expect("tokio runtime")
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
    match cli.command {
        Command::Serve { .. } | Command::Hub { .. } => init_logging(tracing::Level::INFO),
        Command::Filter { .. } => filter_test::init_logging(),
        _ => init_logging(tracing::Level::WARN),
    }
    // Its exit status is the verdict's, and it prints its own errors.
    if let Command::Filter { command: FilterCommand::Test(test) } = cli.command {
        return ExitCode::from(filter_test::run(test));
    }
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
        Command::Open { session, base, no_browser, no_qr } => {
            let (base, browser, qr) = (base.as_deref(), !no_browser, !no_qr);
            let hub = session.is_none().then(|| hub::running(&discovery::opzero_home())).flatten();
            if let Some(hub) = hub {
                let what = format!("the hub (every session, http://127.0.0.1:{})", hub.port);
                return runtime().block_on(client::open((hub.port, &hub.secret), &what, base, browser, qr));
            }
            let entry = match session {
                Some(session) => find(config, &session)?,
                None => client::only_session(&channels_dir(config)?)?,
            };
            runtime().block_on(client::open((entry.port, &entry.secret), &entry.session_id, base, browser, qr))
        }
        Command::Status { session } => runtime().block_on(client::status(&find(config, &session)?)),
        Command::Hub { port } => {
            let config = HubConfig::resolve(config, &hub::default_config()).map_err(|e| UserError(e.to_string()))?;
            runtime().block_on(hub::run(config, port))
        }
        Command::NewFilter(args) => {
            println!("{}", new_filter::run(&args)?);
            Ok(())
        }
        Command::Filter { .. } => unreachable!("handled in main"),
        Command::Validate { file, hub } => {
            let file = file.or(config.map(Path::to_path_buf)).unwrap_or_else(|| PathBuf::from("opzero.toml"));
            if !file.is_file() {
                return Err(UserError(format!("{}: no such config file", file.display())).into());
            }
            if hub || file.file_name().is_some_and(|n| n == "hub.toml") {
                let c = HubConfig::load(&file).map_err(|e| UserError(e.to_string()))?;
                let hosts = c.allowed_hosts.iter().map(ToString::to_string).collect::<Vec<_>>();
                println!(
                    "{}: ok (the hub's config: port {}; allowed hosts: {})",
                    file.display(),
                    c.port,
                    if hosts.is_empty() { "loopback only".to_string() } else { hosts.join(", ") },
                );
                return Ok(());
            }
            let (config, filters) = serve::check(Some(&file))?;
            let names = filters.names();
            // What each filter may reach beyond its sandbox.
            let grants: String = config
                .filters
                .iter()
                .filter(|f| !f.allowed_outbound_hosts.is_empty())
                .map(|f| {
                    let hosts: Vec<String> = f.allowed_outbound_hosts.iter().map(ToString::to_string).collect();
                    format!("; {} may reach {}", f.name, hosts.join(", "))
                })
                .collect();
            println!(
                "{}: ok ({} filter{}{}; permission relay {}{grants})",
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
