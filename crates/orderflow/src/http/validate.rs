//! The JSON rules every request body passes before it is parsed into a request type, so
//! that whatever is accepted can be stored, read back and processed on both backends:
//!
//! - no NUL character (U+0000) in any string or key: PostgreSQL's `text` and `jsonb`
//!   cannot hold it;
//! - numbers finite and at most [`MAX_NUMBER`] in magnitude: `jsonb` keeps a number as an
//!   exact decimal and prints `1.7976931348623157e308` back as a 309-digit integer, which
//!   no longer reads as a finite `f64`;
//! - no key twice in one object (JSON leaves it open; we refuse rather than pick one);
//! - at most [`MAX_DEPTH`] levels of nesting.
//!
//! The same pass checks the syntax of the whole body (a syntax error anywhere wins over a
//! rule broken before it), so the typed parse that follows is the body's second and last.
//! A body read as a JSON value (an ERP update) is made by that pass itself
//! ([`check_json_value`]): one pass in all.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Numbers beyond this magnitude are refused (documented in the README).
pub const MAX_NUMBER: f64 = 1e300;

/// Objects and arrays nest at most this deep.
pub const MAX_DEPTH: usize = 32;

/// A value that breaks one of the rules: where it is (JSON path) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

/// Why a body was refused before its typed parse.
#[derive(Debug)]
pub enum Problem {
    /// Not JSON: a syntax error, cut short, or something after the value.
    Syntax(serde_json::Error),
    /// JSON that breaks one of the rules above.
    Rule(Violation),
}

/// Checks the syntax of `bytes` and the rules, in one pass over the body.
pub fn check_json(bytes: &[u8]) -> Result<(), Problem> {
    walk::<()>(bytes)
}

/// [`check_json`], making the body's JSON value in the same pass.
pub fn check_json_value(bytes: &[u8]) -> Result<Value, Problem> {
    walk::<Value>(bytes)
}

fn walk<B: Build>(bytes: &[u8]) -> Result<B, Problem> {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let made = Walk::<B>::root(&found)
        .deserialize(&mut de)
        .and_then(|made| de.end().map(|()| made))
        .map_err(Problem::Syntax)?;
    match found.into_inner() {
        Some(v) => Err(Problem::Rule(v)),
        None => Ok(made),
    }
}

/// What a walk makes of the values it checks: nothing (`()`), or the JSON value.
trait Build: Sized {
    type Seq: Default;
    type Map: Default;
    fn null() -> Self;
    fn bool(v: bool) -> Self;
    fn i64(v: i64) -> Self;
    fn u64(v: u64) -> Self;
    fn f64(v: f64) -> Self;
    fn str(v: &str) -> Self;
    fn push(seq: &mut Self::Seq, v: Self);
    fn seq(seq: Self::Seq) -> Self;
    fn insert(map: &mut Self::Map, key: Cow<'_, str>, v: Self);
    fn map(map: Self::Map) -> Self;
}

impl Build for () {
    type Seq = ();
    type Map = ();
    fn null() {}
    fn bool(_: bool) {}
    fn i64(_: i64) {}
    fn u64(_: u64) {}
    fn f64(_: f64) {}
    fn str(_: &str) {}
    fn push((): &mut (), (): ()) {}
    fn seq((): ()) {}
    fn insert((): &mut (), _: Cow<'_, str>, (): ()) {}
    fn map((): ()) {}
}

/// As serde_json reads a `Value` (a non-finite number, refused by the rules, is `null`).
impl Build for Value {
    type Seq = Vec<Value>;
    type Map = Map<String, Value>;
    fn null() -> Self {
        Value::Null
    }
    fn bool(v: bool) -> Self {
        Value::Bool(v)
    }
    fn i64(v: i64) -> Self {
        Value::from(v)
    }
    fn u64(v: u64) -> Self {
        Value::from(v)
    }
    fn f64(v: f64) -> Self {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
    fn str(v: &str) -> Self {
        Value::String(v.to_owned())
    }
    fn push(seq: &mut Vec<Value>, v: Self) {
        seq.push(v);
    }
    fn seq(seq: Vec<Value>) -> Self {
        Value::Array(seq)
    }
    fn insert(map: &mut Map<String, Value>, key: Cow<'_, str>, v: Self) {
        map.insert(key.into_owned(), v);
    }
    fn map(map: Map<String, Value>) -> Self {
        Value::Object(map)
    }
}

/// Checks one text value (a path segment or a query parameter) against the same rule for
/// NUL characters.
pub fn check_text(path: &str, value: &str) -> Result<(), Violation> {
    if value.contains('\0') {
        Err(nul(path))
    } else {
        Ok(())
    }
}

/// What is wrong with text holding a NUL character.
const NUL: &str = "text must not contain the NUL character (U+0000)";

/// The violation for a NUL character at `path`.
pub fn nul(path: &str) -> Violation {
    Violation {
        path: path.to_owned(),
        message: NUL.to_owned(),
    }
}

/// Walks one value; the first violation is recorded in `found`, and the walk goes on to
/// the end of the body so that a later syntax error still counts. A value knows its parent
/// and its key or index; its JSON path is put together only for a violation (made for
/// every value, the paths cost more than the parse: one allocation each).
struct Walk<'a, B> {
    parent: Option<&'a Walk<'a, B>>,
    step: Step<'a>,
    depth: usize,
    found: &'a RefCell<Option<Violation>>,
    made: PhantomData<fn() -> B>,
}

/// Where a value is under its parent.
#[derive(Clone, Copy)]
enum Step<'a> {
    Root,
    Key(&'a str),
    Index(usize),
}

impl<'a, B> Walk<'a, B> {
    fn root(found: &'a RefCell<Option<Violation>>) -> Self {
        Walk {
            parent: None,
            step: Step::Root,
            depth: 0,
            found,
            made: PhantomData,
        }
    }

    /// The JSON path of this value (`$`, `$.items[0].sku`).
    fn path(&self) -> String {
        let mut steps = Vec::new();
        let mut at = Some(self);
        while let Some(walk) = at {
            steps.push(walk.step);
            at = walk.parent;
        }
        let mut path = String::from("$");
        for step in steps.iter().rev() {
            match step {
                Step::Root => {}
                Step::Key(k) => {
                    path.push('.');
                    path.push_str(k);
                }
                Step::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        path
    }

    /// Records a violation at this value unless an earlier one was found.
    fn fail(&self, message: impl FnOnce() -> String) {
        let mut found = self.found.borrow_mut();
        if found.is_none() {
            *found = Some(Violation {
                path: self.path(),
                message: message(),
            });
        }
    }

    fn child<'b>(&'b self, step: Step<'b>) -> Walk<'b, B> {
        Walk {
            parent: Some(self),
            step,
            depth: self.depth + 1,
            found: self.found,
            made: PhantomData,
        }
    }

    fn nest(&self) {
        if self.depth >= MAX_DEPTH {
            self.fail(|| format!("JSON nests deeper than {MAX_DEPTH} levels"));
        }
    }
}

/// The keys of one object so far: a short list to scan (most objects have a few keys),
/// and a set once there are many.
#[derive(Default)]
struct Keys<'de> {
    few: Vec<Cow<'de, str>>,
    many: HashSet<Cow<'de, str>>,
}

impl<'de> Keys<'de> {
    /// Adds `key`; false when the object had it already.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if self.many.is_empty() {
            if self.few.contains(&key) {
                return false;
            }
            if self.few.len() < 16 {
                self.few.push(key);
                return true;
            }
            self.many.extend(self.few.drain(..));
        }
        self.many.insert(key)
    }
}

impl<'de, B: Build> DeserializeSeed<'de> for Walk<'_, B> {
    type Value = B;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<B, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, B: Build> Visitor<'de> for Walk<'_, B> {
    type Value = B;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<B, E> {
        Ok(B::bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<B, E> {
        Ok(B::i64(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<B, E> {
        Ok(B::u64(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<B, E> {
        if !(v.is_finite() && v.abs() <= MAX_NUMBER) {
            self.fail(|| format!("numbers must be at most {MAX_NUMBER:e} in magnitude"));
        }
        Ok(B::f64(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<B, E> {
        if v.contains('\0') {
            self.fail(|| NUL.to_owned());
        }
        Ok(B::str(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<B, E> {
        Ok(B::null())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<B, A::Error> {
        self.nest();
        let mut made = B::Seq::default();
        let mut index = 0usize;
        while let Some(v) = seq.next_element_seed(self.child(Step::Index(index)))? {
            B::push(&mut made, v);
            index += 1;
        }
        Ok(B::seq(made))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<B, A::Error> {
        self.nest();
        let mut keys = Keys::default();
        let mut made = B::Map::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let child = self.child(Step::Key(&key));
            if key.contains('\0') {
                self.fail(|| NUL.to_owned());
            } else if !keys.insert(key.clone()) {
                child.fail(|| format!("key {key:?} appears more than once in the object"));
            }
            let v = map.next_value_seed(child)?;
            B::insert(&mut made, key, v);
        }
        Ok(B::map(made))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(body: &str) -> Option<String> {
        match check_json(body.as_bytes()) {
            Err(Problem::Rule(v)) => Some(v.path),
            Err(Problem::Syntax(e)) => panic!("{body}: {e}"),
            Ok(()) => None,
        }
    }

    #[test]
    fn plain_json_passes() {
        assert_eq!(path_of(r#"{"a":[1,2.5,"x",null,true,{"b":-3}]}"#), None);
        assert_eq!(path_of("1e300"), None);
        assert!(matches!(check_json(b"not json"), Err(Problem::Syntax(_))));
        // A syntax error after a broken rule still makes the body malformed.
        let broken_later = br#"{"a":"\u0000"} x"#;
        assert!(matches!(check_json(broken_later), Err(Problem::Syntax(_))));
    }

    /// The value made in the checking pass is the one serde_json reads; a body that breaks
    /// a rule or is not JSON is refused the same way as by `check_json`.
    #[test]
    fn the_checked_value_is_the_one_serde_json_reads() {
        let bodies = [
            r#"{"order_reference":"R-1","event":"ship","attributes":{"tracking":"T1"}}"#,
            r#"{"a":[1,-2,2.5,1e300,"x\n\u00e9",null,true,false,{"b":{}},[]],"c\"d":"e"}"#,
            r#"  {"n": 18446744073709551615, "m": -9223372036854775808, "f": 0.1}  "#,
            "[1,2]",
            r#""just a string""#,
        ];
        for body in bodies {
            let read: Value = serde_json::from_str(body).unwrap();
            match check_json_value(body.as_bytes()) {
                Ok(made) => assert_eq!(made, read, "{body}"),
                Err(_) => panic!("{body} refused"),
            }
        }
        for bad in [r#"{"a":"\u0000"}"#, r#"{"a":1,"a":2}"#, r#"{"x":-1e301}"#] {
            assert!(matches!(check_json(bad.as_bytes()), Err(Problem::Rule(_))));
            assert!(
                matches!(check_json_value(bad.as_bytes()), Err(Problem::Rule(v)) if Some(v.path.clone()) == path_of(bad)),
                "{bad}"
            );
        }
        assert!(matches!(
            check_json_value(b"{\"a\":1} x"),
            Err(Problem::Syntax(_))
        ));
    }

    #[test]
    fn nul_is_refused_in_values_and_keys() {
        assert_eq!(
            path_of(r#"{"a":{"b":["x","a\u0000b"]}}"#).unwrap(),
            "$.a.b[1]"
        );
        assert_eq!(path_of(r#"{"a":{"k\u0000":1}}"#).unwrap(), "$.a");
    }

    #[test]
    fn huge_numbers_are_refused() {
        assert_eq!(path_of(r#"{"x":1.7976931348623157e308}"#).unwrap(), "$.x");
        assert_eq!(path_of(r#"{"x":-1e301}"#).unwrap(), "$.x");
        assert_eq!(
            path_of(&format!(r#"{{"x":1{}}}"#, "0".repeat(308))).unwrap(),
            "$.x"
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        assert_eq!(path_of(r#"{"event":"a","event":"b"}"#).unwrap(), "$.event");
        assert_eq!(path_of(r#"[{"a":1},{"a":1}]"#), None);
        assert_eq!(
            path_of(r#"{"a":[1,{"b":1,"c":{},"b":2}]}"#).unwrap(),
            "$.a[1].b"
        );
        // Past 16 keys an object's keys are kept in a set: a repeat is still found.
        let many: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
        assert_eq!(path_of(&format!("{{{}}}", many.join(","))), None);
        let repeat = format!(r#"{{{},"k3":0}}"#, many.join(","));
        assert_eq!(path_of(&repeat).unwrap(), "$.k3");
    }

    #[test]
    fn depth_is_bounded() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(check_json(deep.as_bytes()).is_err());
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(check_json(ok.as_bytes()).is_ok());
    }
}
