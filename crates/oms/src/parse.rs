//! Spryker `<statemachine>` XML loader.
//!
//! API contract (the implementation is being written):
//! - [`load_file`] loads one main process file; `<process file="..."/>` includes resolve
//!   against the folder that holds the main file (spaces in `file` become `_`).
//! - [`load_dir`] loads every top-level `*.xml` in a folder whose `<process>` has
//!   `main="true"`, sorted by file name.
//! - Errors carry `file:line:column`; warnings are returned beside the process.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::check::Warning;
use crate::model::{Origin, Process};

/// A loaded main process and the warnings about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub process: Process,
    pub path: PathBuf,
    pub warnings: Vec<Warning>,
}

/// Why a process could not be loaded, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {kind}")]
pub struct LoadError {
    pub origin: Origin,
    pub kind: LoadErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadErrorKind {
    #[error("cannot read file: {0}")]
    Unreadable(String),
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("{0}")]
    Structure(String),
    #[error("no main process (a <process main=\"true\">) in this file")]
    NoMainProcess,
    #[error("subprocess {0:?} is not defined by any <process name=... file=...> include")]
    MissingSubprocess(String),
    #[error("unknown source state {0:?}")]
    UnknownSource(String),
    #[error("unknown target state {0:?}")]
    UnknownTarget(String),
    #[error("unknown event {0:?}: add it to <events>")]
    UnknownEvent(String),
    #[error("invalid timeout {value:?}: {reason}")]
    InvalidTimeout { value: String, reason: String },
    #[error("initial state {0:?} is not defined")]
    UnknownInitialState(String),
}

impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.process.name(), self.path.display())
    }
}

/// Loads the main process in `path`.
pub fn load_file(path: &Path) -> Result<Loaded, LoadError> {
    Err(LoadError {
        origin: Origin {
            file: path.display().to_string(),
            line: 0,
            column: 0,
        },
        kind: LoadErrorKind::Structure("loader not implemented yet".into()),
    })
}

/// Loads every main process file at the top level of `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<Loaded>, LoadError> {
    let _ = dir;
    Ok(Vec::new())
}
