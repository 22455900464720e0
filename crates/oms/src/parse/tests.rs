//! One test per loading rule, on small XML strings. Includes are served from an in-memory
//! map through the same `ReadFn` the filesystem loader uses.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use super::*;

/// Loads `main` (labelled `main.xml`) with `files` as the includable files under `defs/`.
fn load_with(
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

fn load(main: &str, files: &[(&str, &str)]) -> Result<Loaded, LoadError> {
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
