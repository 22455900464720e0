//! DOT and SVG rendering (being written; this placeholder keeps the API compiling).

use crate::model::Process;

#[derive(Clone, Debug, Default)]
pub struct GraphOptions {
    pub counts: std::collections::BTreeMap<String, u64>,
}

pub fn to_dot(process: &Process, _opts: &GraphOptions) -> String {
    format!("digraph \"{}\" {{}}\n", process.name())
}

pub fn to_svg(process: &Process, _opts: &GraphOptions) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\"><text>{}</text></svg>\n",
        process.name()
    )
}
