//! Reads one `<statemachine>` document into owned, unresolved definitions.
//!
//! Names are not resolved here: a transition may point at a state that another file
//! declares, so resolution waits until every included file is read (see `merge`).
//! Elements are matched by local name only, because real files use several namespaces
//! (`spryker:oms-01`, `http://static.spryker.com`, `https://static.spryker.com`, none) and
//! Spryker's SimpleXML builder ignores them.

use roxmltree::{Document, Node};

use super::{LoadError, LoadErrorKind};
use crate::duration::Timeout;
use crate::model::{Event, Origin, State};

/// Everything one file defines: process bodies and `<process file="..."/>` includes.
#[derive(Debug, Default)]
pub(super) struct RawFile {
    pub processes: Vec<RawProcess>,
    pub includes: Vec<RawInclude>,
}

/// `<process [name=...] file="..." [prefix=...]/>` at statemachine level.
#[derive(Debug)]
pub(super) struct RawInclude {
    pub name: Option<String>,
    pub file: String,
    pub prefix: Option<String>,
    pub origin: Origin,
}

/// A `<process>` with a body (no `file` attribute).
#[derive(Debug)]
pub(super) struct RawProcess {
    pub name: Option<String>,
    pub main: bool,
    pub origin: Origin,
    pub subprocesses: Vec<Named>,
    /// States and events as read; `process` is filled in when they are merged, because an
    /// include may rename the process.
    pub states: Vec<State>,
    pub events: Vec<Event>,
    pub transitions: Vec<RawTransition>,
}

/// A name read from an attribute or element text, with where it was read.
#[derive(Clone, Debug)]
pub(super) struct Named {
    pub name: String,
    pub origin: Origin,
}

#[derive(Debug)]
pub(super) struct RawTransition {
    pub source: Named,
    pub target: Named,
    pub event: Option<Named>,
    pub condition: Option<String>,
    pub happy: bool,
    pub origin: Origin,
}

/// Maps byte offsets to 1-based line and column (in characters, like roxmltree). Built once
/// per document because `Document::text_pos_at` rescans the text on every call.
struct Lines<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, starts }
    }

    fn origin(&self, file: &str, pos: usize) -> Origin {
        let pos = pos.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= pos).max(1);
        let start = self.starts[line - 1];
        let column = self.text.get(start..pos).map_or(0, |s| s.chars().count()) + 1;
        Origin {
            file: file.to_owned(),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }
}

/// Reading context of one document: its label (for origins) and line index.
struct Reader<'t> {
    file: &'t str,
    lines: Lines<'t>,
}

impl Reader<'_> {
    fn at(&self, node: Node<'_, '_>) -> Origin {
        self.lines.origin(self.file, node.range().start)
    }

    fn error(&self, node: Node<'_, '_>, kind: LoadErrorKind) -> LoadError {
        LoadError {
            origin: self.at(node),
            kind,
        }
    }

    fn structure(&self, node: Node<'_, '_>, message: String) -> LoadError {
        self.error(node, LoadErrorKind::Structure(message))
    }

    /// A required, non-empty attribute.
    fn required(&self, node: Node<'_, '_>, attr: &str) -> Result<String, LoadError> {
        optional(node, attr).ok_or_else(|| {
            self.structure(
                node,
                format!("<{}> needs a {attr:?} attribute", node.tag_name().name()),
            )
        })
    }

    /// The trimmed text of a required child element such as `<source>`.
    fn child_text(&self, node: Node<'_, '_>, child: &str) -> Result<Named, LoadError> {
        let el = elements(node)
            .find(|c| c.tag_name().name() == child)
            .ok_or_else(|| {
                self.structure(
                    node,
                    format!("<{}> needs a <{child}> element", node.tag_name().name()),
                )
            })?;
        Ok(Named {
            name: text(el),
            origin: self.at(el),
        })
    }
}

/// Parses `text` (labelled `file` in origins) into raw definitions.
pub(super) fn read(text: &str, file: &str) -> Result<RawFile, LoadError> {
    let doc = Document::parse(text).map_err(|e| xml_error(file, text, &e))?;
    let r = Reader {
        file,
        lines: Lines::new(doc.input_text()),
    };
    let root = doc.root_element();
    if root.tag_name().name() != "statemachine" {
        return Err(r.structure(
            root,
            format!(
                "root element is <{}>, expected <statemachine>",
                root.tag_name().name()
            ),
        ));
    }
    let mut out = RawFile::default();
    for p in elements(root).filter(|n| n.tag_name().name() == "process") {
        match optional(p, "file") {
            Some(path) => out.includes.push(RawInclude {
                name: optional(p, "name"),
                file: path,
                prefix: optional(p, "prefix"),
                origin: r.at(p),
            }),
            None => out.processes.push(read_process(&r, p)?),
        }
    }
    Ok(out)
}

/// True when the document is a `<statemachine>` with a `<process main="true">`. Used by
/// `load_dir` to skip subprocess-only files without resolving anything.
pub(super) fn has_main_process(text: &str, file: &str) -> Result<bool, LoadError> {
    let doc = Document::parse(text).map_err(|e| xml_error(file, text, &e))?;
    let root = doc.root_element();
    Ok(root.tag_name().name() == "statemachine"
        && elements(root).any(|p| p.tag_name().name() == "process" && flag(p, "main")))
}

fn xml_error(file: &str, text: &str, e: &roxmltree::Error) -> LoadError {
    use roxmltree::Error as E;
    let pos = e.pos();
    let message = e.to_string();
    // roxmltree ends most messages with " at line:col"; the origin already says that.
    let suffix = format!(" at {pos}");
    let message = message.strip_suffix(&suffix).unwrap_or(&message).to_owned();
    // Some errors carry no position (roxmltree says 1:1): point at the real place.
    let at = |offset: usize| Lines::new(text).origin(file, offset);
    let origin = match e {
        // A truncated file, or one cut inside a tag: where the input ends.
        E::UnexpectedEndOfStream | E::UnclosedRootNode | E::NoRootNode => at(text.len()),
        E::DtdDetected => at(text.find("<!DOCTYPE").unwrap_or(0)),
        _ => Origin {
            file: file.to_owned(),
            line: pos.row,
            column: pos.col,
        },
    };
    let message = match e {
        E::DtdDetected => {
            "a DOCTYPE is not allowed (process files need no DTD, and entities from one \
             are not expanded)"
                .to_owned()
        }
        _ => message,
    };
    LoadError {
        origin,
        kind: LoadErrorKind::Xml(message),
    }
}

fn read_process(r: &Reader<'_>, p: Node<'_, '_>) -> Result<RawProcess, LoadError> {
    let mut out = RawProcess {
        name: optional(p, "name"),
        main: flag(p, "main"),
        origin: r.at(p),
        subprocesses: Vec::new(),
        states: Vec::new(),
        events: Vec::new(),
        transitions: Vec::new(),
    };
    // Sections may come in any order (amazon-pay puts <events> before <transitions>).
    for section in elements(p) {
        match section.tag_name().name() {
            "subprocesses" => {
                for s in elements(section).filter(|n| n.tag_name().name() == "process") {
                    let name = text(s);
                    if name.is_empty() {
                        return Err(r.structure(s, "empty subprocess name".into()));
                    }
                    out.subprocesses.push(Named {
                        name,
                        origin: r.at(s),
                    });
                }
            }
            "states" => {
                for s in elements(section).filter(|n| n.tag_name().name() == "state") {
                    out.states.push(read_state(r, s)?);
                }
            }
            "events" => {
                for e in elements(section).filter(|n| n.tag_name().name() == "event") {
                    out.events.push(read_event(r, e)?);
                }
            }
            "transitions" => {
                for t in elements(section).filter(|n| n.tag_name().name() == "transition") {
                    out.transitions.push(read_transition(r, t)?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn read_state(r: &Reader<'_>, s: Node<'_, '_>) -> Result<State, LoadError> {
    Ok(State {
        name: r.required(s, "name")?,
        display: optional(s, "display"),
        reserved: flag(s, "reserved"),
        flags: elements(s)
            .filter(|n| n.tag_name().name() == "flag")
            .map(text)
            .collect(),
        process: String::new(),
        origin: r.at(s),
    })
}

fn read_event(r: &Reader<'_>, e: Node<'_, '_>) -> Result<Event, LoadError> {
    let timeout = match e.attribute_node("timeout") {
        Some(a) if !a.value().is_empty() => {
            let parsed = Timeout::parse(a.value()).map_err(|source| LoadError {
                origin: r.lines.origin(r.file, a.range().start),
                kind: LoadErrorKind::InvalidTimeout {
                    value: a.value().to_owned(),
                    source: Box::new(source),
                },
            })?;
            Some(parsed)
        }
        _ => None,
    };
    Ok(Event {
        name: r.required(e, "name")?,
        manual: flag(e, "manual"),
        on_enter: flag(e, "onEnter"),
        command: optional(e, "command"),
        timeout,
        timeout_processor: optional(e, "timeoutProcessor"),
        process: String::new(),
        origin: r.at(e),
    })
}

fn read_transition(r: &Reader<'_>, t: Node<'_, '_>) -> Result<RawTransition, LoadError> {
    let event = elements(t)
        .find(|n| n.tag_name().name() == "event")
        .map(|n| Named {
            name: text(n),
            origin: r.at(n),
        });
    Ok(RawTransition {
        source: r.child_text(t, "source")?,
        target: r.child_text(t, "target")?,
        event,
        condition: optional(t, "condition"),
        happy: flag(t, "happy"),
        origin: r.at(t),
    })
}

fn elements<'a, 'i>(node: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(Node::is_element)
}

/// An attribute as Spryker reads it: an empty value counts as absent.
fn optional(node: Node<'_, '_>, attr: &str) -> Option<String> {
    node.attribute(attr)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Spryker's boolean attributes: only the exact string `true` is true.
fn flag(node: Node<'_, '_>, attr: &str) -> bool {
    node.attribute(attr) == Some("true")
}

/// All text inside an element, trimmed (comments and CDATA splits are joined).
fn text(node: Node<'_, '_>) -> String {
    let joined: String = node
        .descendants()
        .filter(Node::is_text)
        .filter_map(|n| n.text())
        .collect();
    joined.trim().to_owned()
}
