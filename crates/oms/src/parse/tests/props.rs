//! Property tests: parsers never panic, whatever the input.

use proptest::prelude::*;

use super::*;
use crate::duration::Timeout;

/// A small valid definition the mutations start from: it has includes, every section and
/// every attribute, so mutations reach every branch of the reader.
const SEED: &str = r#"<?xml version="1.0"?>
<statemachine xmlns="spryker:oms-01">
  <process name="P" main="true">
    <subprocesses><process>S</process></subprocesses>
    <states><state name="new" reserved="true" display="d"><flag>f</flag></state></states>
    <transitions>
      <transition happy="true" condition="C"><source>new</source><target>s</target><event>e</event></transition>
      <transition><source>s</source><target>new</target></transition>
    </transitions>
    <events><event name="e" manual="true" onEnter="true" command="X" timeout="1 hour" timeoutProcessor="T"/></events>
  </process>
  <process name="S" file="S.xml" prefix=""/>
</statemachine>"#;

const SUB: &str = r#"<statemachine><process name="S"><states><state name="s"/></states></process></statemachine>"#;

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    Replace(usize, char),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0usize..20).prop_map(|(at, len)| Mutation::Delete(at, len)),
        (any::<usize>(), "[<>/\"'=&a-z ]{0,8}").prop_map(|(at, s)| Mutation::Insert(at, s)),
        (any::<usize>(), any::<char>()).prop_map(|(at, c)| Mutation::Replace(at, c)),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let n = chars.len().max(1);
    match m {
        Mutation::Delete(at, len) => {
            let at = at % n;
            let end = (at + len).min(chars.len());
            chars.drain(at.min(end)..end);
        }
        Mutation::Insert(at, s) => {
            let at = at % (chars.len() + 1);
            chars.splice(at..at, s.chars());
        }
        Mutation::Replace(at, c) => {
            if !chars.is_empty() {
                chars[at % n] = *c;
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #[test]
    fn timeout_parse_never_panics(s in any::<String>()) {
        let _ = Timeout::parse(&s);
    }

    #[test]
    fn timeout_parse_never_panics_on_timeout_like_text(s in "[ +PT0-9a-zA-Z]{0,24}") {
        let _ = Timeout::parse(&s);
    }

    #[test]
    fn loader_never_panics_on_arbitrary_text(s in any::<String>()) {
        let _ = load(&s, &[("S.xml", SUB)]);
    }

    #[test]
    fn loader_never_panics_on_mutated_definitions(
        main in proptest::collection::vec(mutation(), 1..6),
        sub in proptest::collection::vec(mutation(), 0..3),
    ) {
        let main = main.iter().fold(SEED.to_owned(), |t, m| apply(&t, m));
        let sub = sub.iter().fold(SUB.to_owned(), |t, m| apply(&t, m));
        let _ = load(&main, &[("S.xml", &sub)]);
    }
}

#[test]
fn the_seed_itself_loads() {
    let l = load(SEED, &[("S.xml", SUB)]).unwrap();
    assert_eq!(l.process.transitions().len(), 2);
}
