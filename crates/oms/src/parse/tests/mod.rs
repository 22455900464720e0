//! One test per loading rule, on small XML strings. Includes are served from an in-memory
//! map through the same `ReadFn` the filesystem loader uses.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use super::*;

mod errors;
mod files;
mod initial;
mod positions;
mod props;
mod rules;
mod warnings;

/// Loads `main` (labelled `main.xml`) with `files` as the includable files under `defs/`.
pub(super) fn load_with(
    main: &str,
    files: &[(&str, &str)],
    options: &LoadOptions,
) -> Result<Loaded, LoadError> {
    let files: HashMap<String, String> = files
        .iter()
        .map(|(p, t)| {
            (
                Path::new("defs").join(p).display().to_string(),
                t.to_string(),
            )
        })
        .collect();
    let read = move |p: &Path| {
        files
            .get(&p.display().to_string())
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    };
    load_text(main, "defs/main.xml", Path::new("defs"), options, &read).map(
        |(process, warnings)| Loaded {
            process,
            path: "defs/main.xml".into(),
            warnings,
        },
    )
}

pub(super) fn load(main: &str, files: &[(&str, &str)]) -> Result<Loaded, LoadError> {
    load_with(main, files, &LoadOptions::default())
}

#[test]
fn loads_a_minimal_process() {
    let l = load(
        r#"<statemachine><process name="P" main="true">
        <states><state name="new"/><state name="done"/></states>
        <transitions><transition><source>new</source><target>done</target><event>go</event></transition></transitions>
        <events><event name="go"/></events>
        </process></statemachine>"#,
        &[],
    )
    .unwrap();
    assert_eq!(l.process.name(), "P");
    assert_eq!(l.process.states().len(), 2);
    assert_eq!(l.process.state(l.process.initial()).name, "new");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

/// Joins lines with `\n`, so a test can name positions as (index + 1, column).
pub(super) fn lines(ls: &[&str]) -> String {
    ls.join("\n")
}

/// A main process named `P` with the given inner XML (states, events, transitions...).
pub(super) fn main_with(inner: &str) -> String {
    format!(r#"<statemachine><process name="P" main="true">{inner}</process></statemachine>"#)
}

/// A subprocess file declaring `name` with the given inner XML.
pub(super) fn sub(name: &str, inner: &str) -> String {
    format!(r#"<statemachine><process name="{name}">{inner}</process></statemachine>"#)
}

pub(super) fn state_names(l: &Loaded) -> Vec<&str> {
    l.process.states().iter().map(|s| s.name.as_str()).collect()
}

pub(super) fn event<'a>(l: &'a Loaded, name: &str) -> &'a crate::model::Event {
    let id = l
        .process
        .event_id(name)
        .unwrap_or_else(|| panic!("no event {name}"));
    l.process.event(id)
}

pub(super) fn state<'a>(l: &'a Loaded, name: &str) -> &'a crate::model::State {
    let id = l
        .process
        .state_id(name)
        .unwrap_or_else(|| panic!("no state {name}"));
    l.process.state(id)
}

pub(super) fn err(r: Result<Loaded, LoadError>) -> LoadError {
    match r {
        Ok(l) => panic!("expected an error, loaded {}", l.process.name()),
        Err(e) => e,
    }
}
