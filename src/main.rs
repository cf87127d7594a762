//! The command line. Everything else lives in the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sinkhole::policy::DomainName;
use sinkhole::{app, diff};

#[derive(Parser)]
#[command(name = "sinkhole", version, about = "A DNS sinkhole resolver")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the resolver.
    Serve {
        /// Configuration file (default: ./sinkhole.yaml, else built-in).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Load the configuration and every list; report what was loaded and
    /// every rejected line. Exit 0 if usable, 1 if not.
    Check {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Show the decision for a name and why (list, line, rule, category).
    Explain {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// The domain name to explain.
        name: String,
        /// The client address asking (accepted for forward compatibility).
        #[arg(long)]
        client: Option<std::net::IpAddr>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compare two configurations before publishing NEW: per list, the rules
    /// added and removed; with --names, every name in FILE whose decision
    /// changes. Exit 0 when no name in FILE changes (always without
    /// --names), 3 when one does, 1 when either side is invalid.
    Diff {
        /// The configuration in service.
        old: PathBuf,
        /// The configuration to publish.
        new: PathBuf,
        /// Names to check: one per line, or `rank,name` CSV.
        #[arg(long, value_name = "FILE")]
        names: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sinkhole: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            init_logging();
            let config = app::load_config(config.as_deref())?;
            app::serve(config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => {
            let config = app::load_config(config.as_deref())?;
            let usable = app::check(&config, &mut std::io::stdout().lock())?;
            Ok(if usable {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Explain {
            config,
            name,
            client,
            json,
        } => {
            let name = match DomainName::parse(&name) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("sinkhole: {name:?} is not a domain name: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let config = app::load_config(config.as_deref())?;
            let explanation = app::explain(&config, &name, client.map(|c| c.to_string()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&explanation)?);
            } else {
                print!("{}", explanation.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff {
            old,
            new,
            names,
            json,
        } => {
            let report = diff::run(&old, &new, names.as_deref())?;
            let text = if json {
                serde_json::to_string_pretty(&report)? + "\n"
            } else {
                report.to_text()
            };
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
                _ => {}
            }
            Ok(if report.names_changed() {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// JSON lines on stdout, for the SIEM; `RUST_LOG` overrides the level.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .init();
}
