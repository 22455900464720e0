//! Command-line interface: argument types and the code behind each subcommand.

mod check_condition;
mod clients;
mod effects;
mod graphql;
mod inbox;
mod items;
pub mod process;
mod serve;
mod simulate;
mod subscriptions;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::domain::{OrderService, ProcessSet};
use crate::store::Store;
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "orderflow",
    version,
    about = "ERP order updates into an OMS state machine"
)]
pub struct Cli {
    /// Log line format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API and its background tasks until SIGTERM/SIGINT.
    Serve(serve::ServeArgs),
    /// Move items whose timeout is due or whose event-less transition's condition holds.
    CheckCondition(check_condition::CheckConditionArgs),
    /// Run the inbox worker and the effects executor until SIGTERM/SIGINT, or with --once
    /// until nothing is due.
    Worker(worker::WorkerArgs),
    /// Apply pending database migrations and exit.
    Migrate(StoreArgs),
    /// Manage API clients.
    #[command(subcommand)]
    Clients(clients::ClientsCommand),
    /// Print the effective configuration as TOML, secrets masked.
    Config(StoreArgs),
    /// Check, render and simulate process definitions.
    #[command(subcommand)]
    Process(process::ProcessCommand),
    /// Inspect the ERP inbox and retry or replay updates.
    #[command(subcommand)]
    Inbox(inbox::InboxCommand),
    /// After-commit HTTP command calls: list them, retry a dead one.
    #[command(subcommand)]
    Effects(effects::EffectsCommand),
    /// Items in states the loaded processes do not have: list them, move them.
    #[command(subcommand)]
    Items(items::ItemsCommand),
    /// Subscriptions to order events: create (prints the signing secret once), list,
    /// enable, disable, delete, deliveries, retry, replay.
    #[command(subcommand)]
    Subscriptions(subscriptions::SubscriptionsCommand),
    /// The GraphQL API's schema.
    #[command(subcommand)]
    Graphql(graphql::GraphqlCommand),
}

/// Where the configuration and the store are.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Database URL: sqlite://FILE (default sqlite://orderflow.db) or postgres://...
    #[arg(long)]
    database_url: Option<String>,
    /// Configuration file (default: ./orderflow.toml when present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Inbox transport URL: amqp://user:pass@host:5672/vhost selects the RabbitMQ
    /// transport, redis://[:pass@]host:6379[/db] the Redis transport (default: the
    /// database inbox, or `[inbox]` in the configuration).
    #[arg(long)]
    inbox_url: Option<String>,
}

impl StoreArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(url) = &self.database_url {
            config.database_url = url.clone();
        }
        if let Some(url) = &self.inbox_url {
            config.set_inbox_url(url)?;
        }
        Ok(config)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// What serve, worker and check-condition start from: the processes loaded and checked, the
/// store open and migrated, the strays reported. All three refuse to start without a main
/// process: every order, update and timer would fail on its unknown process.
async fn boot(config: &Config) -> anyhow::Result<OrderService> {
    let processes = ProcessSet::load_configured(config)?;
    processes.check_unbound(config.strict)?;
    if processes.is_empty() {
        anyhow::bail!(
            "no main process found in {}: give the folder with --processes",
            config.processes.display()
        );
    }
    let store = open_store(config).await?;
    let service = OrderService::new(store, Arc::new(processes));
    report_strays(&service, config.strict).await?;
    Ok(service)
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let masked = crate::config::mask_url_password(&config.database_url);
    match Store::open(&config.database_url).await {
        Ok(store) => Ok(store),
        // Already one sentence that names the database.
        Err(e @ crate::store::StoreError::Connect(_)) => Err(e.into()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot open the store at {masked}"))),
    }
}

/// Logs the items the loaded processes cannot place (process or state not in the loaded
/// definitions), counted per process and state; with `strict`, refuses to start.
async fn report_strays(service: &OrderService, strict: bool) -> anyhow::Result<()> {
    let strays = service.strays().await?;
    for s in &strays {
        tracing::warn!(
            process = %s.process,
            state = %s.state,
            items = s.items,
            reason = s.reason,
            "items in a state the loaded processes do not have: they do not move until \
             `orderflow items move` places them"
        );
    }
    if strict && !strays.is_empty() {
        let list: Vec<String> = strays
            .iter()
            .map(|s| format!("{} items of {} in {:?}", s.items, s.process, s.state))
            .collect();
        anyhow::bail!(
            "strict mode: {} (see `orderflow items strays`)",
            list.join(", ")
        );
    }
    Ok(())
}

/// An error and its causes on one line, each cause once: drivers often repeat their
/// cause's text in their own message ("error returned from database: X", then X).
pub fn one_sentence(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The line `main` prints for an error. A process definition that does not load is
/// printed the same way by every command (`check`, `render`, `simulate`, `serve`, ...),
/// as compilers do, so editors can jump to it: `FILE:LINE:COL: error: message`.
pub fn error_line(e: &anyhow::Error) -> String {
    match e
        .chain()
        .find_map(|c| c.downcast_ref::<oms::parse::LoadError>())
    {
        Some(load) => format_load_error(load),
        None => format!("error: {}", one_sentence(e)),
    }
}

/// `FILE:LINE:COL: error: message`, the message followed by its causes (why a file could
/// not be read, why a timeout is not a duration).
pub fn format_load_error(e: &oms::parse::LoadError) -> String {
    let mut line = format!("{}: error: {}", e.origin, e.kind);
    let mut cause = std::error::Error::source(&e.kind);
    while let Some(c) = cause {
        line.push_str(&format!(": {c}"));
        cause = c.source();
    }
    line
}

/// Parses nothing: runs the parsed command and returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    telemetry::init_logging(cli.log_format);
    match cli.command {
        Command::Process(cmd) => process::run(cmd),
        Command::Serve(args) => runtime()?.block_on(serve::run(args)),
        Command::CheckCondition(args) => runtime()?.block_on(check_condition::run(args)),
        Command::Worker(args) => runtime()?.block_on(worker::run(args)),
        Command::Migrate(args) => {
            let config = args.load()?;
            runtime()?.block_on(async {
                let store = open_store(&config).await?;
                store.close().await;
                println!("migrations applied");
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Clients(cmd) => runtime()?.block_on(clients::run(cmd)),
        Command::Inbox(cmd) => runtime()?.block_on(inbox::run(cmd)),
        Command::Items(cmd) => runtime()?.block_on(items::run(cmd)),
        Command::Effects(cmd) => runtime()?.block_on(effects::run(cmd)),
        Command::Subscriptions(cmd) => runtime()?.block_on(subscriptions::run(cmd)),
        Command::Graphql(cmd) => Ok(graphql::run(cmd)),
        Command::Config(args) => {
            print!("{}", args.load()?.to_masked_toml());
            Ok(ExitCode::SUCCESS)
        }
    }
}
