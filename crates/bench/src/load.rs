//! Loader scaling: load and check time of generated processes of growing size.
//!
//! Each size is written to a temporary file shaped like real Spryker processes (a happy
//! chain with manual, timeout, onEnter and event-less transitions, side branches with
//! conditions, and a few unreachable states so the reachability warning has work to do).
//! The baseline in the same run is parsing the same file with roxmltree alone: the XML
//! floor no loader can go under. A linear loader keeps the ratio to that floor flat.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::median;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// State counts to generate, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000usize, 10_000, 70_000])]
    states: Vec<usize>,
    /// Timed rounds per size; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Keep the generated files in this folder (e.g. to time `orderflow process check`).
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
}

/// A process of `n` states (rounded to whole groups of ten) as XML.
pub(crate) fn generate(n: usize) -> String {
    let groups = n.div_ceil(10).max(1);
    let mut states = String::new();
    let mut events = String::new();
    let mut transitions = String::new();
    let st = |g: usize, k: usize| {
        if g == 0 && k == 0 {
            "new".to_owned()
        } else {
            format!("s{g}-{k}")
        }
    };
    for g in 0..groups {
        for k in 0..10 {
            let reserved = if k % 3 == 0 { " reserved=\"true\"" } else { "" };
            let _ = writeln!(
                states,
                "      <state name=\"{}\"{reserved} display=\"oms.state.s{g}-{k}\"><flag>f{k}</flag></state>",
                st(g, k)
            );
        }
        let _ = writeln!(
            events,
            "      <event name=\"pay{g}\" manual=\"true\"/>\n      \
             <event name=\"wait{g}\" timeout=\"14days\"/>\n      \
             <event name=\"export{g}\" onEnter=\"true\" command=\"Erp/Export\"/>\n      \
             <event name=\"ship{g}\" manual=\"true\" command=\"Erp/Ship\"/>"
        );
        let tr = |out: &mut String,
                  from: String,
                  to: String,
                  event: Option<String>,
                  extra: &str| {
            let ev = event
                .map(|e| format!("<event>{e}</event>"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "      <transition{extra}><source>{from}</source><target>{to}</target>{ev}</transition>"
            );
        };
        tr(
            &mut transitions,
            st(g, 0),
            st(g, 1),
            Some(format!("pay{g}")),
            " happy=\"true\"",
        );
        tr(
            &mut transitions,
            st(g, 1),
            st(g, 2),
            Some(format!("export{g}")),
            " happy=\"true\"",
        );
        tr(
            &mut transitions,
            st(g, 2),
            st(g, 3),
            None,
            " happy=\"true\" condition=\"Cond/Ok\"",
        );
        tr(
            &mut transitions,
            st(g, 2),
            st(g, 4),
            Some(format!("wait{g}")),
            "",
        );
        tr(
            &mut transitions,
            st(g, 3),
            st(g, 5),
            Some(format!("ship{g}")),
            " happy=\"true\"",
        );
        tr(
            &mut transitions,
            st(g, 4),
            st(g, 5),
            Some(format!("ship{g}")),
            "",
        );
        tr(
            &mut transitions,
            st(g, 5),
            st(g, 6),
            None,
            " happy=\"true\"",
        );
        tr(
            &mut transitions,
            st(g, 6),
            st(g, 7),
            Some(format!("pay{g}")),
            " condition=\"Cond/No\"",
        );
        tr(
            &mut transitions,
            st(g, 6),
            st(g, 8),
            Some(format!("pay{g}")),
            " happy=\"true\"",
        );
        // s{g}-9 is unreachable: only the last group's end and group links leave it.
        if g + 1 < groups {
            tr(
                &mut transitions,
                st(g, 8),
                st(g + 1, 0),
                None,
                " happy=\"true\"",
            );
            tr(&mut transitions, st(g, 9), st(g + 1, 0), None, "");
        }
    }
    format!(
        "<?xml version=\"1.0\"?>\n<statemachine xmlns=\"spryker:oms-01\">\n  \
         <process name=\"Generated\" main=\"true\">\n    <states>\n{states}    </states>\n    \
         <transitions>\n{transitions}    </transitions>\n    <events>\n{events}    </events>\n  \
         </process>\n</statemachine>\n"
    )
}

fn time_ms(rounds: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut v = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        f()?;
        v.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(v))
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.keep.as_deref().unwrap_or(tmp.path());
    std::fs::create_dir_all(dir)?;
    println!(
        "{:>8} {:>8} {:>9} {:>11} {:>11} {:>11} {:>9}",
        "states", "trans", "MB", "xml ms", "load ms", "check ms", "load/xml"
    );
    for &n in &args.states {
        let xml = generate(n);
        let path = dir.join(format!("Generated{n}.xml"));
        std::fs::write(&path, &xml).with_context(|| format!("writing {}", path.display()))?;
        let loaded = oms::parse::load_file(&path)?;
        let p = &loaded.process;
        let xml_ms = time_ms(args.rounds, || {
            let text = std::fs::read_to_string(&path)?;
            let doc = roxmltree::Document::parse(&text)?;
            std::hint::black_box(doc.descendants().count());
            Ok(())
        })?;
        let load_ms = time_ms(args.rounds, || load(&path))?;
        let check_ms = time_ms(args.rounds, || {
            std::hint::black_box(oms::check::warnings(p).len());
            Ok(())
        })?;
        println!(
            "{:>8} {:>8} {:>9.1} {:>11.1} {:>11.1} {:>11.1} {:>8.1}x",
            p.states().len(),
            p.transitions().len(),
            xml.len() as f64 / 1e6,
            xml_ms,
            load_ms,
            check_ms,
            load_ms / xml_ms
        );
    }
    println!(
        "load = read, parse, merge and check (what `process check` does per file); check = the \
         warnings pass alone; medians of {} rounds; xml = roxmltree parse alone (baseline)",
        args.rounds
    );
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<()> {
    let l = oms::parse::load_file(path)?;
    std::hint::black_box(l.warnings.len());
    Ok(())
}
