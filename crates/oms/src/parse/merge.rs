//! Follows includes and merges a main process with its subprocesses into one [`Process`],
//! the way Spryker's `Builder` does: one global state map (first declaration kept here,
//! with a warning), one global event map (the last declaration wins), transitions resolved
//! against both once every file is read.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use super::xml::{self, Named, RawFile, RawProcess, RawTransition};
use super::{LoadError, LoadErrorKind, LoadOptions};
use crate::check::{Warning, WarningCode};
use crate::model::{Event, EventId, InitialSource, Origin, Process, State, StateId, Transition};

/// Reads an included file; the filesystem in production, a map in tests.
pub(super) type ReadFn<'a> = &'a dyn Fn(&Path) -> io::Result<String>;

/// Spryker's `getSubProcessPrefixDelimiter()`: `prefix="Pay"` turns `new` into `Pay - new`.
pub const PREFIX_DELIMITER: &str = " - ";

/// Collects the process bodies of the main file and, transitively, of its includes.
struct Collector<'a> {
    read: ReadFn<'a>,
    root: &'a Path,
    processes: Vec<RawProcess>,
    by_name: HashMap<String, usize>,
    /// Included files already read; guards against include cycles and double reads.
    seen: HashSet<PathBuf>,
}

impl Collector<'_> {
    fn add_file(&mut self, raw: RawFile) -> Result<(), LoadError> {
        for p in raw.processes {
            self.add_process(p)?;
        }
        for inc in raw.includes {
            let path = include_path(self.root, &inc.file);
            if !self.seen.insert(path.clone()) {
                continue;
            }
            let label = path.display().to_string();
            let text = (self.read)(&path).map_err(|source| LoadError {
                origin: inc.origin.clone(),
                kind: LoadErrorKind::Unreadable {
                    path: path.clone(),
                    source,
                },
            })?;
            let mut file = xml::read(&text, &label)?;
            // As in Spryker, the include's name renames the first process of the file.
            if let (Some(name), Some(first)) = (&inc.name, file.processes.first_mut()) {
                first.name = Some(name.clone());
            }
            if let Some(prefix) = &inc.prefix {
                for p in &mut file.processes {
                    apply_prefix(p, prefix);
                }
            }
            self.add_file(file)?;
        }
        Ok(())
    }

    fn add_process(&mut self, p: RawProcess) -> Result<(), LoadError> {
        let Some(name) = p.name.clone() else {
            return Err(LoadError {
                origin: p.origin,
                kind: LoadErrorKind::Structure(
                    "<process> needs a \"name\" attribute (or an include with name=...)".into(),
                ),
            });
        };
        // A second body for the same name is ignored: the first one read is the definition.
        if !self.by_name.contains_key(&name) {
            self.by_name.insert(name, self.processes.len());
            self.processes.push(p);
        }
        Ok(())
    }

    /// Main first, then its subprocesses depth-first in `<subprocesses>` order.
    fn order(&self, main: usize) -> Result<Vec<usize>, LoadError> {
        let mut order = Vec::new();
        let mut visited = HashSet::new();
        self.visit(main, &mut order, &mut visited)?;
        Ok(order)
    }

    fn visit(
        &self,
        i: usize,
        order: &mut Vec<usize>,
        visited: &mut HashSet<usize>,
    ) -> Result<(), LoadError> {
        if !visited.insert(i) {
            return Ok(());
        }
        order.push(i);
        for sub in &self.processes[i].subprocesses {
            let &j = self.by_name.get(&sub.name).ok_or_else(|| LoadError {
                origin: sub.origin.clone(),
                kind: LoadErrorKind::MissingSubprocess(sub.name.clone()),
            })?;
            self.visit(j, order, visited)?;
        }
        Ok(())
    }
}

/// Where an include's `file` is read: under the definitions folder, spaces replaced by `_`,
/// and `.xml` appended when the name has no extension, as the StateMachine module's
/// builder does (`file="Subprocess/MerchantReturn"`). A name that already ends in `.xml`
/// (any case, as the OMS module writes it) is taken as it is.
pub(super) fn include_path(root: &Path, file: &str) -> PathBuf {
    let rel = file.replace(' ', "_");
    let has_xml = Path::new(&rel)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xml"));
    if has_xml {
        root.join(rel)
    } else {
        root.join(format!("{rel}.xml"))
    }
}

/// Spryker's `prefixSubProcessElementValue`/`Attributes`: state and event names, and the
/// `<source>`, `<target>` and `<event>` texts of the included file get `prefix - `.
fn apply_prefix(p: &mut RawProcess, prefix: &str) {
    let prefixed = |name: &str| format!("{prefix}{PREFIX_DELIMITER}{name}");
    for s in &mut p.states {
        s.name = prefixed(&s.name);
    }
    for e in &mut p.events {
        e.name = prefixed(&e.name);
    }
    for t in &mut p.transitions {
        t.source.name = prefixed(&t.source.name);
        t.target.name = prefixed(&t.target.name);
        if let Some(ev) = &mut t.event {
            ev.name = prefixed(&ev.name);
        }
    }
}

/// The merged process and the warnings found while merging (duplicates).
pub(super) struct Merged {
    pub process: Process,
    pub warnings: Vec<Warning>,
}

/// Loads the main process of `main` (already read, labelled `label`), following includes
/// under `root`.
pub(super) fn load(
    main: RawFile,
    label: &str,
    root: &Path,
    options: &LoadOptions,
    read: ReadFn<'_>,
) -> Result<Merged, LoadError> {
    let (main_name, main_origin) = main_process(&main, label)?;
    let mut c = Collector {
        read,
        root,
        processes: Vec::new(),
        by_name: HashMap::new(),
        seen: HashSet::new(),
    };
    c.add_file(main)?;
    // The main file's processes are registered first, so its name is always known.
    let main_index = c.by_name.get(&main_name).copied().unwrap_or_default();
    let order: Vec<&RawProcess> = c
        .order(main_index)?
        .into_iter()
        .map(|i| &c.processes[i])
        .collect();

    let mut parts = Parts::default();
    for p in &order {
        parts.add_states(p);
        parts.add_events(p);
    }
    let transitions = order
        .iter()
        .flat_map(|p| p.transitions.iter().map(move |t| (*p, t)))
        .map(|(p, t)| parts.transition(p, t))
        .collect::<Result<Vec<_>, _>>()?;

    let (initial, initial_source) =
        initial_state(&parts, &transitions, &main_name, main_origin, options)?;
    let subprocesses = order[1..].iter().map(|p| name_of(p)).collect();
    let process = Process::new(
        main_name,
        initial,
        parts.states,
        parts.events,
        transitions,
        subprocesses,
    )
    .with_initial_source(initial_source);
    Ok(Merged {
        process,
        warnings: parts.warnings,
    })
}

/// The initial state, chosen as [`LoadOptions`] documents.
fn initial_state(
    parts: &Parts,
    transitions: &[Transition],
    process: &str,
    origin: Origin,
    options: &LoadOptions,
) -> Result<(StateId, InitialSource), LoadError> {
    if let Some(name) = options.initial_for(process) {
        return match parts.state_ids.get(name) {
            Some(&id) => Ok((id, InitialSource::Configured)),
            None => Err(LoadError {
                origin,
                kind: LoadErrorKind::UnknownInitialState(name.to_owned()),
            }),
        };
    }
    if let Some(&id) = parts.state_ids.get(options.initial_state()) {
        return Ok((id, InitialSource::Default));
    }
    let mut entered = vec![false; parts.states.len()];
    for t in transitions {
        entered[t.target.0 as usize] = true;
    }
    let candidates: Vec<usize> = (0..entered.len()).filter(|&i| !entered[i]).collect();
    match candidates.as_slice() {
        [only] => Ok((StateId(*only as u32), InitialSource::NotEntered)),
        _ => Err(LoadError {
            origin,
            kind: LoadErrorKind::NoInitialState(
                candidates
                    .iter()
                    .map(|&i| parts.states[i].name.clone())
                    .collect(),
            ),
        }),
    }
}

/// The name and origin of the file's `<process main="true">`.
fn main_process(main: &RawFile, label: &str) -> Result<(String, Origin), LoadError> {
    match main.processes.iter().find(|p| p.main) {
        None => Err(LoadError {
            origin: start_of(label),
            kind: LoadErrorKind::NoMainProcess,
        }),
        Some(p) => match &p.name {
            Some(name) => Ok((name.clone(), p.origin.clone())),
            None => Err(LoadError {
                origin: p.origin.clone(),
                kind: LoadErrorKind::Structure(
                    "the main <process> needs a \"name\" attribute".into(),
                ),
            }),
        },
    }
}

/// Registered processes always have a name (see `Collector::add_process`).
fn name_of(p: &RawProcess) -> String {
    p.name.clone().unwrap_or_default()
}

/// States and events merged so far, with their name indexes and the duplicate warnings.
#[derive(Default)]
struct Parts {
    states: Vec<State>,
    state_ids: HashMap<String, StateId>,
    events: Vec<Event>,
    event_ids: HashMap<String, EventId>,
    warnings: Vec<Warning>,
}

impl Parts {
    /// Adds `p`'s states; a name seen before keeps its first declaration.
    fn add_states(&mut self, p: &RawProcess) {
        let process = name_of(p);
        for s in &p.states {
            if let Some(&first) = self.state_ids.get(&s.name) {
                let first = &self.states[first.0 as usize];
                self.warnings.push(Warning {
                    code: WarningCode::DuplicateState,
                    origin: s.origin.clone(),
                    message: format!(
                        "state {:?} of process {process} is already declared by process {} at \
                         {}; the first declaration is kept",
                        s.name, first.process, first.origin
                    ),
                });
                continue;
            }
            self.state_ids
                .insert(s.name.clone(), StateId(self.states.len() as u32));
            self.states.push(State {
                process: process.clone(),
                ..s.clone()
            });
        }
    }

    /// Adds `p`'s events; a name seen before is replaced in place, as Spryker's global
    /// event map keeps the last declaration read.
    fn add_events(&mut self, p: &RawProcess) {
        let process = name_of(p);
        for e in &p.events {
            let event = Event {
                process: process.clone(),
                ..e.clone()
            };
            match self.event_ids.get(&e.name) {
                Some(&id) => {
                    let earlier = &mut self.events[id.0 as usize];
                    self.warnings.push(Warning {
                        code: WarningCode::DuplicateEvent,
                        origin: e.origin.clone(),
                        message: format!(
                            "event {:?} of process {process} is already declared by process {} \
                             at {}; the last declaration wins, as in Spryker",
                            e.name, earlier.process, earlier.origin
                        ),
                    });
                    *earlier = event;
                }
                None => {
                    self.event_ids
                        .insert(e.name.clone(), EventId(self.events.len() as u32));
                    self.events.push(event);
                }
            }
        }
    }

    /// Resolves one transition against every state and event of the merged process.
    fn transition(&self, p: &RawProcess, t: &RawTransition) -> Result<Transition, LoadError> {
        let state = |n: &Named, kind: fn(String) -> LoadErrorKind| {
            self.state_ids
                .get(&n.name)
                .copied()
                .ok_or_else(|| LoadError {
                    origin: n.origin.clone(),
                    kind: kind(n.name.clone()),
                })
        };
        let source = state(&t.source, LoadErrorKind::UnknownSource)?;
        let target = state(&t.target, LoadErrorKind::UnknownTarget)?;
        let event = match &t.event {
            None => None,
            Some(n) => Some(
                self.event_ids
                    .get(&n.name)
                    .copied()
                    .ok_or_else(|| LoadError {
                        origin: n.origin.clone(),
                        kind: LoadErrorKind::UnknownEvent(n.name.clone()),
                    })?,
            ),
        };
        Ok(Transition {
            source,
            target,
            event,
            condition: t.condition.clone(),
            happy: t.happy,
            process: name_of(p),
            origin: t.origin.clone(),
        })
    }
}

/// The origin used for problems with a whole file.
pub(super) fn start_of(label: &str) -> Origin {
    Origin {
        file: label.to_owned(),
        line: 1,
        column: 1,
    }
}
