//! `orderflow process check|render|simulate`: work with process definitions offline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use oms::InitialSource;
use oms::Registry;
use oms::bindings::Bindings;
use oms::graph::GraphOptions;
use oms::parse::{self, LoadOptions, Loaded};

use crate::config::Config;
use serde_json::json;

use super::simulate::{self, SimulateArgs};

#[derive(Debug, Subcommand)]
pub enum ProcessCommand {
    /// Load and check process files (or folders of them); exit 1 on any error.
    Check {
        /// Main process files, or folders whose top-level main processes are all checked.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Treat condition and command names with no plugin bound as errors.
        #[arg(long)]
        strict: bool,
        /// Configuration whose [conditions], [commands] and [timeout_processors] bind
        /// plugins and whose [initial_states] name initial states
        /// (default: ./orderflow.toml when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also count the items in this database that the checked definitions cannot place
        /// (a state or process they do not have): what a deploy of them would strand.
        /// Reads only; runs no migrations. Under --strict they are errors.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Draw a process as SVG or Graphviz DOT.
    Render {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Svg)]
        format: Format,
        /// Output file (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print one JSON object `{"process","format","content"}` instead of the drawing.
        #[arg(long)]
        json: bool,
        /// Configuration whose [initial_states] name initial states
        /// (default: ./orderflow.toml when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run events against a simulated order and print every step.
    Simulate(SimulateArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Svg,
    Dot,
}

pub fn run(cmd: ProcessCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ProcessCommand::Check {
            files,
            strict,
            config,
            json,
            database_url,
        } => {
            let against = database_url.as_deref();
            check(&files, strict, config.as_deref(), json, against)
        }
        ProcessCommand::Render {
            file,
            format,
            output,
            json,
            config,
        } => render(&file, format, output.as_deref(), json, config.as_deref()),
        ProcessCommand::Simulate(args) => simulate::run(args),
    }
}

/// The plugin bindings of the effective configuration (file, then `ORDERFLOW_*`).
pub fn load_bindings(config: Option<&Path>) -> anyhow::Result<Bindings> {
    Ok(Config::load(config)?.bindings())
}

/// Loads a file, or every main process of a folder.
fn load_all(path: &Path, options: &LoadOptions) -> Result<Vec<Loaded>, parse::LoadError> {
    if path.is_dir() {
        parse::load_dir_with(path, options)
    } else {
        parse::load_file_with(path, options).map(|l| vec![l])
    }
}

/// Loads one main process file with the effective configuration's initial states; the
/// error keeps its type so `main` prints it as `FILE:LINE:COL: error: ...`.
pub fn load_one(file: &Path, config: Option<&Path>) -> anyhow::Result<Loaded> {
    let options = Config::load(config)?.load_options();
    Ok(parse::load_file_with(file, &options)?)
}

/// ` (initial state "draft", the only state no transition enters)` when the initial state
/// is not Spryker's default `new`; nothing otherwise, so default output stays as it was.
fn initial_note(p: &oms::Process) -> String {
    match p.initial_source() {
        InitialSource::Default => String::new(),
        source => format!(", initial state {:?} ({source})", p.state(p.initial()).name),
    }
}

fn check(
    files: &[PathBuf],
    strict: bool,
    config: Option<&Path>,
    as_json: bool,
    database_url: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let options = config.load_options();
    let mut registry = Registry::new();
    registry.bind(&config.bindings());
    let mut failed = false;
    let mut report = Vec::new();
    let mut checked: Vec<std::sync::Arc<oms::Process>> = Vec::new();
    for path in files {
        match load_all(path, &options) {
            Err(e) => {
                failed = true;
                if !as_json {
                    eprintln!("{}", super::format_load_error(&e));
                }
                report.push(json!({"file": path.display().to_string(), "ok": false,
                    "errors": [{"at": e.origin.to_string(), "message": e.kind.to_string()}]}));
            }
            Ok(loaded) if loaded.is_empty() => {
                // A folder whose files are all subprocesses (or that has none) checks nothing.
                failed = true;
                let message = "no main process: no top-level *.xml file in this folder has a \
                               <process main=\"true\">";
                let at = format!("{}", path.display());
                if !as_json {
                    eprintln!("{at}: error: {message}");
                }
                report.push(json!({"file": at, "ok": false,
                    "errors": [{"at": at, "message": message}]}));
            }
            Ok(loaded) => {
                for l in loaded {
                    checked.push(std::sync::Arc::new(l.process.clone()));
                    let unbound = registry.unbound(&l.process);
                    let file = l.path.display().to_string();
                    if !as_json {
                        for w in &l.warnings {
                            eprintln!("{w}");
                        }
                        for u in &unbound {
                            let level = if strict { "error" } else { "warning" };
                            eprintln!(
                                "{}: {level}: {} {:?} is not bound to a plugin",
                                u.origin, u.kind, u.name
                            );
                        }
                    }
                    let ok = !strict || unbound.is_empty();
                    failed |= !ok;
                    if !as_json && ok {
                        let p = &l.process;
                        println!(
                            "{file}: ok: process {} ({} states, {} events, {} transitions, {} warnings{})",
                            p.name(),
                            p.states().len(),
                            p.events().len(),
                            p.transitions().len(),
                            l.warnings.len(),
                            initial_note(p)
                        );
                    }
                    report.push(json!({
                        "file": file,
                        "process": l.process.name(),
                        "ok": ok,
                        "initial_state": l.process.state(l.process.initial()).name,
                        "initial_state_source": l.process.initial_source(),
                        "states": l.process.states().len(),
                        "events": l.process.events().len(),
                        "transitions": l.process.transitions().len(),
                        "warnings": l.warnings,
                        "unbound": unbound,
                    }));
                }
            }
        }
    }
    let strays = match database_url {
        Some(url) => {
            let strays = stranded(url, &checked)?;
            let level = if strict { "error" } else { "warning" };
            for s in &strays {
                if !as_json {
                    eprintln!(
                        "{}: {level}: {} items of process {} in state {:?}: {}",
                        crate::config::mask_url_password(url),
                        s.items,
                        s.process,
                        s.state,
                        s.reason
                    );
                }
            }
            failed |= strict && !strays.is_empty();
            Some(strays)
        }
        None => None,
    };
    if as_json {
        let mut out = json!({"ok": !failed, "files": report});
        if let Some(strays) = strays {
            out["strays"] = json!(strays);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The items in the database at `url` that `checked` cannot place. Connects without
/// migrating: a check before a deploy changes nothing.
fn stranded(
    url: &str,
    checked: &[std::sync::Arc<oms::Process>],
) -> anyhow::Result<Vec<crate::domain::strays::Strays>> {
    super::runtime()?.block_on(async {
        let store = crate::store::Store::connect(url).await?;
        let counts = store.item_state_counts().await;
        store.close().await;
        let lookup = |name: &str| checked.iter().find(|p| p.name() == name).map(|p| &**p);
        Ok(crate::domain::strays::strays_of(counts?, lookup))
    })
}

fn render(
    file: &Path,
    format: Format,
    output: Option<&Path>,
    as_json: bool,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let loaded = load_one(file, config)?;
    let opts = GraphOptions::with_legend();
    let content = match format {
        Format::Svg => oms::graph::to_svg(&loaded.process, &opts),
        Format::Dot => oms::graph::to_dot(&loaded.process, &opts),
    };
    let content = if as_json {
        let f = match format {
            Format::Svg => "svg",
            Format::Dot => "dot",
        };
        serde_json::to_string(
            &json!({"process": loaded.process.name(), "format": f, "content": content}),
        )? + "\n"
    } else {
        content
    };
    match output {
        Some(out) => std::fs::write(out, content)
            .with_context(|| format!("cannot write {}", out.display()))?,
        None => print!("{content}"),
    }
    Ok(ExitCode::SUCCESS)
}
