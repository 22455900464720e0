//! Spryker `<statemachine>` XML loader.
//!
//! - [`load_file`] loads one main process file; `<process file="..."/>` includes resolve
//!   against the folder that holds the main file (the definitions root, as Spryker looks
//!   them up under `config/Zed/oms`), with spaces in `file` replaced by `_`.
//! - [`load_str`] loads a main process from a string, [`load_str_from`] too but reads its
//!   includes through a function instead of the filesystem.
//! - [`load_dir`] loads every top-level `*.xml` in a folder whose `<process>` has
//!   `main="true"`, sorted by file name; subprocess-only files are skipped.
//! - Errors carry `file:line:column`; warnings ([`crate::check`]) are returned beside the
//!   process.
//!
//! `prefix="P"` on an include is applied as Spryker's builder applies it: the state and
//! event names declared in the included file, and the `<source>`, `<target>` and `<event>`
//! texts there, become `P - name` ([`PREFIX_DELIMITER`], Spryker's
//! `getSubProcessPrefixDelimiter()`), as in `Builder::mergeSubProcessFiles` of spryker/oms
//! and spryker/state-machine. Process names and the files that file includes in turn are
//! not prefixed, and a prefixed file can only refer to its own (prefixed) states.

mod merge;
mod xml;

#[cfg(test)]
mod tests;

pub use merge::PREFIX_DELIMITER;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::check::Warning;
use crate::duration::DurationError;
use crate::model::{Origin, Process};

/// A loaded main process and the warnings about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The main process with its subprocesses merged.
    pub process: Process,
    /// The main file (for [`load_str`], its label).
    pub path: PathBuf,
    /// What loads but is probably wrong, in file order then state and event order.
    pub warnings: Vec<Warning>,
}

/// Why a process could not be loaded, and where.
///
/// Its `Display` is `origin: kind`; the cause of an unreadable file or an invalid timeout
/// is its [`source`](std::error::Error::source), so print the chain to see it.
#[derive(Debug)]
pub struct LoadError {
    /// Where the problem is: the offending element, or the start of an unreadable file.
    pub origin: Origin,
    /// What the problem is.
    pub kind: LoadErrorKind,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.kind)
    }
}

/// The origin is context for the kind, not a cause of its own: the chain goes on with the
/// kind's source, so `LoadError` and its kind are not printed twice.
impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// What is wrong with a process definition. Match with a wildcard arm: new checks may add
/// kinds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadErrorKind {
    /// A main file, an include or a definitions folder could not be read.
    #[error("cannot read file: {}", path.display())]
    Unreadable {
        /// The path as the loader tried it.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: io::Error,
    },
    /// The text is not XML (roxmltree's message, without the position already in the
    /// origin).
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// Well-formed XML that is not a `<statemachine>` as Spryker reads it: a missing
    /// attribute, an unexpected element; the message says which.
    #[error("{0}")]
    Structure(String),
    /// The file has no `<process main="true">`.
    #[error("no main process (a <process main=\"true\">) in this file")]
    NoMainProcess,
    /// A `<subprocesses>` entry names a process no include defines.
    #[error("subprocess {0:?} is not defined by any <process name=... file=...> include")]
    MissingSubprocess(String),
    /// A transition's `<source>` names no state.
    #[error("unknown source state {0:?}")]
    UnknownSource(String),
    /// A transition's `<target>` names no state.
    #[error("unknown target state {0:?}")]
    UnknownTarget(String),
    /// A transition's `<event>` names no event of `<events>`.
    #[error("unknown event {0:?}: add it to <events>")]
    UnknownEvent(String),
    /// An event's `timeout="..."` is not a duration.
    #[error("invalid timeout {value:?}")]
    InvalidTimeout {
        /// The attribute's text.
        value: String,
        /// Why it is not a duration (boxed to keep `LoadError`, and the `Result`s that
        /// carry it, small).
        #[source]
        source: Box<DurationError>,
    },
    /// The configured initial state is not a state of the process.
    #[error("initial state {0:?} is not defined")]
    UnknownInitialState(String),
    /// No initial state was configured, `new` is not defined and the states no transition
    /// enters are not exactly one.
    #[error("{}", no_initial_message(.0))]
    NoInitialState(Vec<String>),
}

fn no_initial_message(candidates: &[String]) -> String {
    let how = "name one in orderflow.toml's [initial_states] table (ProcessName = \"state\")";
    match candidates {
        [] => format!(
            "no initial state: \"{DEFAULT_INITIAL_STATE}\" is not defined and every state is \
             entered by some transition; {how}"
        ),
        _ => format!(
            "no initial state: \"{DEFAULT_INITIAL_STATE}\" is not defined and {} states are \
             entered by no transition ({}); {how}",
            candidates.len(),
            candidates
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.process.name(), self.path.display())
    }
}

/// The state new items enter when nothing else names one (Spryker's
/// `getInitialStatus()`).
pub const DEFAULT_INITIAL_STATE: &str = "new";

/// Per-process loading choices.
///
/// The initial state of a process is, in this order:
/// 1. [`LoadOptions::initial`], when set (one name for every process loaded);
/// 2. the entry for the main process's name in [`LoadOptions::initial_states`] (the
///    `[initial_states]` table of `orderflow.toml`, as Spryker configures it per process in
///    PHP);
/// 3. [`DEFAULT_INITIAL_STATE`] (`new`), when the process defines it;
/// 4. the one state that no transition enters, when exactly one such state exists (the
///    StateMachine module's `draft` or `created`).
///
/// A configured name the process does not define is an error, and so is a process with
/// none of the above; the error names the candidates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Name of the initial state for every process loaded with these options.
    pub initial: Option<String>,
    /// Initial state by main process name.
    pub initial_states: BTreeMap<String, String>,
}

impl LoadOptions {
    /// The initial state's name configured for `process`, if any.
    pub fn initial_for(&self, process: &str) -> Option<&str> {
        self.initial
            .as_deref()
            .or_else(|| self.initial_states.get(process).map(String::as_str))
    }

    /// The initial state's name these options ask for when the process configures none.
    pub fn initial_state(&self) -> &str {
        self.initial.as_deref().unwrap_or(DEFAULT_INITIAL_STATE)
    }
}

/// Loads the main process in `path` with default options.
pub fn load_file(path: &Path) -> Result<Loaded, LoadError> {
    load_file_with(path, &LoadOptions::default())
}

/// Loads the main process in `path`. Includes resolve against `path`'s folder.
pub fn load_file_with(path: &Path, options: &LoadOptions) -> Result<Loaded, LoadError> {
    let label = path.display().to_string();
    let text = read_main(path, &label)?;
    let root = path.parent().unwrap_or(Path::new(""));
    load_text(&text, &label, root, options, &|p: &Path| {
        std::fs::read_to_string(p)
    })
    .map(|(process, warnings)| Loaded {
        process,
        path: path.to_path_buf(),
        warnings,
    })
}

/// Loads a main process from a string; `file_label` names it in origins and includes
/// resolve against `root` on the filesystem. Useful for tests and for definitions that do
/// not come from a file.
pub fn load_str(
    xml: &str,
    file_label: &str,
    root: &Path,
    options: &LoadOptions,
) -> Result<Loaded, LoadError> {
    load_str_from(xml, file_label, root, options, &|p: &Path| {
        std::fs::read_to_string(p)
    })
}

/// Loads a main process from a string and reads its includes through `read`, which gets
/// the path an include names under `root`. For definitions kept outside the filesystem
/// (a database, a test, a fuzzer); nothing is read from disk.
pub fn load_str_from(
    xml: &str,
    file_label: &str,
    root: &Path,
    options: &LoadOptions,
    read: &dyn Fn(&Path) -> io::Result<String>,
) -> Result<Loaded, LoadError> {
    load_text(xml, file_label, root, options, read).map(|(process, warnings)| Loaded {
        process,
        path: PathBuf::from(file_label),
        warnings,
    })
}

/// Loads every main process file at the top level of `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<Loaded>, LoadError> {
    load_dir_with(dir, &LoadOptions::default())
}

/// [`load_dir`] with the same options for every process.
pub fn load_dir_with(dir: &Path, options: &LoadOptions) -> Result<Vec<Loaded>, LoadError> {
    let label = dir.display().to_string();
    let unreadable = |source: io::Error| LoadError {
        origin: merge::start_of(&label),
        kind: LoadErrorKind::Unreadable {
            path: dir.to_path_buf(),
            source,
        },
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "xml") {
            paths.push(path);
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut out = Vec::new();
    for path in paths {
        let file = path.display().to_string();
        if xml::has_main_process(&read_main(&path, &file)?, &file)? {
            out.push(load_file_with(&path, options)?);
        }
    }
    Ok(out)
}

fn read_main(path: &Path, label: &str) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError {
        origin: merge::start_of(label),
        kind: LoadErrorKind::Unreadable {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// The whole pipeline on text: read, follow includes through `read`, merge, check.
fn load_text(
    text: &str,
    label: &str,
    root: &Path,
    options: &LoadOptions,
    read: merge::ReadFn<'_>,
) -> Result<(Process, Vec<Warning>), LoadError> {
    let raw = xml::read(text, label)?;
    let merged = merge::load(raw, label, root, options, read)?;
    let mut warnings = merged.warnings;
    warnings.extend(crate::check::warnings(&merged.process));
    Ok((merged.process, warnings))
}
