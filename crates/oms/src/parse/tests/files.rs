//! The filesystem entry points: `load_file`, `load_str` and `load_dir`, and `load_str_from`,
//! which reads includes through a function instead.

use std::fs;
use std::path::PathBuf;

use super::*;

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "oms-parse-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.0.join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const MAIN: &str = r#"<statemachine><process name="M" main="true">
    <subprocesses><process>S</process></subprocesses>
    <states><state name="new"/></states>
    <transitions><transition><source>new</source><target>s</target></transition></transitions>
    </process><process name="S" file="Sub Dir/S.xml"/></statemachine>"#;

const SUB: &str = r#"<statemachine><process name="S"><states><state name="s"/></states></process></statemachine>"#;

#[test]
fn load_file_reads_includes_from_the_main_files_folder() {
    let dir = TempDir::new("file");
    dir.write("B.xml", MAIN);
    dir.write("Sub_Dir/S.xml", SUB);
    let l = load_file(&dir.0.join("B.xml")).unwrap();
    assert_eq!(l.process.name(), "M");
    assert_eq!(l.path, dir.0.join("B.xml"));
    let s = l.process.state(l.process.state_id("s").unwrap());
    assert_eq!(
        s.origin.file,
        dir.0.join("Sub_Dir/S.xml").display().to_string()
    );
}

#[test]
fn load_str_resolves_includes_under_the_given_root() {
    let dir = TempDir::new("str");
    dir.write("Sub_Dir/S.xml", SUB);
    let l = load_str(MAIN, "inline.xml", &dir.0, &LoadOptions::default()).unwrap();
    assert_eq!(l.path, PathBuf::from("inline.xml"));
    assert_eq!(l.process.states().len(), 2);
}

#[test]
fn load_str_from_reads_includes_through_the_given_function_only() {
    let asked = std::cell::RefCell::new(Vec::new());
    let read = |p: &Path| {
        asked.borrow_mut().push(p.to_path_buf());
        Ok(SUB.to_owned())
    };
    let root = Path::new("no/such/folder");
    let l = load_str_from(MAIN, "inline.xml", root, &LoadOptions::default(), &read).unwrap();
    assert_eq!(l.process.states().len(), 2);
    assert_eq!(*asked.borrow(), [root.join("Sub_Dir/S.xml")]);
    let s = l.process.state(l.process.state_id("s").unwrap());
    assert_eq!(
        s.origin.file,
        root.join("Sub_Dir/S.xml").display().to_string()
    );
}

#[test]
fn load_dir_takes_main_files_sorted_and_skips_subprocess_files() {
    let dir = TempDir::new("dir");
    dir.write("b.xml", &MAIN.replace(r#"name="M""#, r#"name="Second""#));
    dir.write("a.xml", MAIN);
    dir.write("Only a subprocess.xml", SUB);
    dir.write("notes.txt", "not xml");
    dir.write("Sub_Dir/S.xml", SUB);
    dir.write("Sub_Dir/Nested main.xml", MAIN);
    let loaded = load_dir(&dir.0).unwrap();
    let names: Vec<&str> = loaded.iter().map(|l| l.process.name()).collect();
    assert_eq!(names, ["M", "Second"]);
}

#[test]
fn load_dir_reports_a_broken_file() {
    let dir = TempDir::new("broken");
    dir.write("a.xml", "<statemachine>");
    let e = load_dir(&dir.0).unwrap_err();
    assert!(matches!(e.kind, LoadErrorKind::Xml(_)), "{e}");
    assert!(e.origin.file.ends_with("a.xml"), "{e}");
}

#[test]
fn an_unreadable_main_file_is_an_error() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("Nope.xml");
    let e = load_file(&path).unwrap_err();
    assert!(matches!(e.kind, LoadErrorKind::Unreadable { .. }), "{e}");
    assert_eq!(e.origin.file, path.display().to_string());
}
