//! The loaded process definitions with their plugins: what the engine needs per order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use oms::bindings::Bindings;
use oms::engine::{EngineOptions, UnboundPolicy};
use oms::parse::LoadOptions;
use oms::plugin::Unbound;
use oms::{Engine, Process, Registry};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot load processes from {dir}")]
    Load {
        dir: String,
        #[source]
        source: oms::parse::LoadError,
    },
    #[error("two process files define process {0:?}")]
    Duplicate(String),
    #[error(
        "strict mode: process {process} uses unbound plugins: {}",
        names.join(", ")
    )]
    Unbound { process: String, names: Vec<String> },
}

/// Processes by name, the plugin registry and engine options. Shared read-only.
#[derive(Clone, Debug, Default)]
pub struct ProcessSet {
    processes: BTreeMap<String, Arc<Process>>,
    registry: Registry,
    options: EngineOptions,
    /// A plugin bound for one of the processes may block its thread.
    may_block: bool,
}

impl ProcessSet {
    /// A set from processes already in memory; `registry` holds their plugins.
    pub fn new(
        processes: impl IntoIterator<Item = Process>,
        registry: Registry,
    ) -> Result<Self, ProcessError> {
        let mut map = BTreeMap::new();
        for p in processes {
            let name = p.name().to_owned();
            if map.insert(name.clone(), Arc::new(p)).is_some() {
                return Err(ProcessError::Duplicate(name));
            }
        }
        let may_block = map.values().any(|p| registry.may_block(p));
        Ok(Self {
            processes: map,
            registry,
            may_block,
            // Unbound names never pass silently: the item stays and the reason is recorded.
            options: EngineOptions {
                unbound: UnboundPolicy::Fail,
                ..EngineOptions::default()
            },
        })
    }

    /// Loads every main process in `dir` and binds the configured built-in plugins.
    pub fn load(dir: &Path, bindings: &Bindings) -> Result<Self, ProcessError> {
        Self::load_with(dir, bindings, Registry::new())
    }

    /// Like [`ProcessSet::load`], for an embedder with plugins of its own in `registry`;
    /// a configured binding with the same name replaces the embedder's plugin.
    pub fn load_with(
        dir: &Path,
        bindings: &Bindings,
        registry: Registry,
    ) -> Result<Self, ProcessError> {
        Self::load_with_options(dir, bindings, registry, &LoadOptions::default())
    }

    /// What `serve`, `worker` and `check-condition` load: the configured folder, bindings
    /// and initial states.
    pub fn load_configured(config: &crate::config::Config) -> Result<Self, ProcessError> {
        Self::load_with_options(
            &config.processes,
            &config.bindings(),
            Registry::new(),
            &config.load_options(),
        )
    }

    /// Like [`ProcessSet::load_with`], with loading options (initial states).
    pub fn load_with_options(
        dir: &Path,
        bindings: &Bindings,
        mut registry: Registry,
        options: &LoadOptions,
    ) -> Result<Self, ProcessError> {
        let loaded =
            oms::parse::load_dir_with(dir, options).map_err(|source| ProcessError::Load {
                dir: dir.display().to_string(),
                source,
            })?;
        for l in &loaded {
            for w in &l.warnings {
                tracing::warn!(process = l.process.name(), "{w}");
            }
        }
        registry.bind(bindings);
        Self::new(loaded.into_iter().map(|l| l.process), registry)
    }

    /// Names used by processes that no plugin is bound to, per process.
    pub fn unbound(&self) -> Vec<(String, Vec<Unbound>)> {
        self.processes
            .iter()
            .map(|(name, p)| (name.clone(), self.registry.unbound(p)))
            .filter(|(_, u)| !u.is_empty())
            .collect()
    }

    /// In strict mode, fails on unbound plugin names; otherwise logs each one.
    pub fn check_unbound(&self, strict: bool) -> Result<(), ProcessError> {
        for (process, unbound) in self.unbound() {
            if strict {
                let names = unbound
                    .iter()
                    .map(|u| format!("{} {}", u.kind, u.name))
                    .collect();
                return Err(ProcessError::Unbound { process, names });
            }
            for u in unbound {
                tracing::warn!(
                    process, kind = %u.kind, name = u.name, origin = u.origin,
                    "plugin is not bound: items that need it will stay where they are"
                );
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Process>> {
        self.processes.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Process>> {
        self.processes.values()
    }

    pub fn len(&self) -> usize {
        self.processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    pub fn engine<'a>(&'a self, process: &'a Process) -> Engine<'a> {
        Engine::new(process, &self.registry).with_options(self.options)
    }

    /// Runs `f`, which runs the engine and so the processes' plugins (commands, conditions,
    /// timeout processors). When one of them may block its thread (a remote call; the
    /// `sleep` binding), on a multi-thread runtime `f` runs under `block_in_place`: the
    /// runtime hands this thread's queue to another thread for the while, so the tasks
    /// behind it (another worker loop, other requests) go on. Otherwise, and on a
    /// current-thread runtime (no other thread to hand the queue to; `block_in_place`
    /// panics there), `f` runs as it is.
    pub fn run_engine<R>(&self, f: impl FnOnce() -> R) -> R {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if self.may_block
            && Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
        {
            tokio::task::block_in_place(f)
        } else {
            f()
        }
    }

    /// [`ProcessSet::run_engine`], with a panic in `f` (a bug in the engine or in a plugin's
    /// command, condition or timeout processor) caught: it is [`StoreError::Panicked`] with
    /// the panic's message, so the transaction around it is rolled back like on a database
    /// error and one order's panic fails only its own work, not the task that runs it.
    pub fn run_engine_caught<R>(&self, f: impl FnOnce() -> R) -> Result<R, StoreError> {
        self.run_engine(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
            .map_err(|panic| StoreError::Panicked(panic_message(panic.as_ref())))
    }
}

/// A panic's message (`panic!` and `assert!` give a `&str` or a `String`).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use oms::plugin::{Command, CommandContext, PluginError};

    use super::*;

    /// One event, bound to a command of the embedder's.
    const XML: &str = concat!(
        r#"<statemachine xmlns="spryker:oms-01"><process name="P" main="true">"#,
        r#"<states><state name="new"/><state name="called"/></states><transitions>"#,
        r#"<transition><source>new</source><target>called</target><event>call</event>"#,
        r#"</transition></transitions><events><event name="call" command="Remote/Call"/>"#,
        r#"</events></process></statemachine>"#
    );

    struct Remote;

    impl Command for Remote {
        fn run(&self, _: &mut CommandContext<'_>) -> Result<(), PluginError> {
            Ok(())
        }
    }

    fn set(registry: Registry) -> ProcessSet {
        let loaded =
            oms::parse::load_str(XML, "p.xml", Path::new("."), &LoadOptions::default()).unwrap();
        ProcessSet::new([loaded.process], registry).unwrap()
    }

    /// A panic in the engine's closure is an error with the panic's message; the thread
    /// that ran it goes on, and so does the next run.
    #[test]
    fn a_panic_in_the_engine_is_an_error_with_its_message() {
        let processes = set(Registry::default());
        let caught = processes.run_engine_caught(|| -> u8 { panic!("a plugin's bug") });
        assert!(
            matches!(&caught, Err(StoreError::Panicked(m)) if m == "a plugin's bug"),
            "{caught:?}"
        );
        let formatted = processes.run_engine_caught(|| -> u8 { panic!("item {} of {}", 2, 3) });
        assert!(
            matches!(&formatted, Err(StoreError::Panicked(m)) if m == "item 2 of 3"),
            "{formatted:?}"
        );
        assert_eq!(processes.run_engine_caught(|| 7).ok(), Some(7));
    }

    /// Two tasks on a runtime with one worker thread each run the engine and block until
    /// the other has started too: they meet only if the first hands the thread on while
    /// it blocks (as a worker's second loop needs while its first waits on a command).
    #[test]
    fn a_command_that_may_block_leaves_the_runtime_to_the_other_tasks() {
        let mut registry = Registry::default();
        registry.register_command("Remote/Call", Remote);
        let processes = Arc::new(set(registry));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let (a_tx, a_rx) = mpsc::channel::<()>();
        let (b_tx, b_rx) = mpsc::channel::<()>();
        let meet = |processes: Arc<ProcessSet>, tx: mpsc::Sender<()>, rx: mpsc::Receiver<()>| async move {
            processes.run_engine(|| {
                tx.send(()).unwrap();
                rx.recv_timeout(Duration::from_secs(10)).is_ok()
            })
        };
        let met = runtime.block_on(async {
            let a = tokio::spawn(meet(processes.clone(), a_tx, b_rx));
            let b = tokio::spawn(meet(processes.clone(), b_tx, a_rx));
            (a.await.unwrap(), b.await.unwrap())
        });
        assert_eq!(met, (true, true));
    }
}
