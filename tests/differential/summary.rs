//! The differential test's report: the table of outcomes per backend and level, timings, the
//! passes that rewrote graphs, the largest passing error, and the failing graphs with their
//! distinct failures (messages with numbers and names blanked).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use kiln_passes::OptLevel;

use super::compare::Errors;
use super::{level_name, Backend, Case, Kind, Report, BACKENDS, LEVELS};

/// The summary table, the failure list, and whether anything failed.
pub(super) fn summarize(
    title: &str,
    cases: &[Case],
    reports: &[Report],
    elapsed: Duration,
) -> (String, bool) {
    let mut s = String::new();
    let mut counts: BTreeMap<(Backend, OptLevel, Kind), usize> = BTreeMap::new();
    let mut listing = String::new();
    let mut failed_graphs = 0;
    let mut import_failures = 0;
    let mut times: BTreeMap<&'static str, Duration> = BTreeMap::new();
    let mut worst: (f64, usize) = (0.0, 0);
    let mut plain = Errors::default();
    // Distinct failures: kind and message with numbers blanked -> (graphs, first graph).
    let mut signatures: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for r in reports {
        for (k, t) in &r.times {
            *times.entry(k).or_default() += *t;
        }
        if r.worst_ok.scaled > worst.0 {
            worst = (r.worst_ok.scaled, r.case);
        }
        plain.merge(r.worst_ok);
        let name = cases[r.case].name();
        // (kind, detail) -> the backends and levels that ended that way.
        let mut by_outcome: BTreeMap<(Kind, String), Vec<String>> = BTreeMap::new();
        if r.import.kind != Kind::Ok {
            import_failures += 1;
            by_outcome
                .entry((r.import.kind, r.import.detail.clone()))
                .or_default()
                .push("import".into());
        }
        for ((b, l), o) in &r.results {
            *counts.entry((*b, *l, o.kind)).or_default() += 1;
            if !matches!(o.kind, Kind::Ok | Kind::Skipped) {
                by_outcome
                    .entry((o.kind, o.detail.clone()))
                    .or_default()
                    .push(format!("{} -{}", b.name(), level_name(*l)));
            }
        }
        if by_outcome.is_empty() {
            continue;
        }
        failed_graphs += 1;
        let _ = writeln!(listing, "  {name}");
        for ((kind, detail), wheres) in &by_outcome {
            let _ = writeln!(
                listing,
                "      {kind:?} at {}: {}",
                wheres.join(", "),
                one_line(detail)
            );
        }
        // One signature per kind of failure in this graph: the mismatches of one graph are one
        // failure however many backends and levels show it.
        let mut merged: BTreeMap<String, (Kind, String, Vec<String>)> = BTreeMap::new();
        for ((kind, detail), wheres) in &by_outcome {
            let key = if *kind == Kind::Mismatch {
                "mismatch".to_string()
            } else {
                format!("{kind:?} {}", blank(detail))
            };
            let e = merged
                .entry(key)
                .or_insert_with(|| (*kind, detail.clone(), Vec::new()));
            e.2.extend(wheres.iter().cloned());
            if *kind == Kind::Mismatch && !detail.contains("onnx reference") {
                e.1.clone_from(detail);
            }
        }
        for (kind, detail, wheres) in merged.values() {
            let sig = signature(*kind, detail, wheres);
            let e = signatures.entry(sig).or_insert((0, name.clone()));
            e.0 += 1;
        }
    }
    let _ = writeln!(s, "\n{title}");
    let _ = writeln!(
        s,
        "{:<10} {:<5} {:>7} {:>9} {:>7} {:>7} {:>8}",
        "backend", "level", "ok", "mismatch", "error", "crash", "skipped"
    );
    for b in BACKENDS {
        for l in LEVELS {
            let c = |k| counts.get(&(b, l, k)).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "{:<10} {:<5} {:>7} {:>9} {:>7} {:>7} {:>8}",
                b.name(),
                level_name(l),
                c(Kind::Ok),
                c(Kind::Mismatch),
                c(Kind::Error),
                c(Kind::Crash),
                c(Kind::Skipped)
            );
        }
    }
    if import_failures > 0 {
        let _ = writeln!(s, "import failures: {import_failures} graphs");
    }
    let cpu: Vec<String> = times
        .iter()
        .map(|(k, t)| format!("{k} {:.1}s", t.as_secs_f64()))
        .collect();
    let _ = writeln!(
        s,
        "wall {:.1}s; summed over threads: {}",
        elapsed.as_secs_f64(),
        cpu.join(", ")
    );
    let mut rewrites: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reports {
        for p in &r.rewritten_by {
            *rewrites.entry(p).or_default() += 1;
        }
    }
    let rewrites: Vec<String> = rewrites.iter().map(|(p, n)| format!("{p} {n}")).collect();
    let _ = writeln!(
        s,
        "graphs each pass rewrote at -O2: {}",
        rewrites.join(", ")
    );
    if let Some(case) = cases.get(worst.1).filter(|_| worst.0 > 0.0) {
        let _ = writeln!(
            s,
            "largest passing error: {:.3} of the tolerance ({}); under the plain 1e-4 * max(1, |want|) rule {:.3}, which {} passing output comparisons would fail",
            worst.0,
            case.name(),
            plain.plain,
            plain.plain_failures
        );
    }
    if failed_graphs > 0 {
        let _ = writeln!(
            s,
            "\n{} distinct failures (graphs, first graph; numbers blanked):",
            signatures.len()
        );
        for (sig, (n, first)) in &signatures {
            let _ = writeln!(s, "  {n:5}  {sig}\n         e.g. {first}");
        }
        let _ = writeln!(s, "\n{failed_graphs} failing graphs:\n{listing}");
    }
    (s, failed_graphs > 0)
}

fn one_line(s: &str) -> String {
    s.lines().map(str::trim).collect::<Vec<_>>().join(" / ")
}

/// `detail` on one line with numbers and quoted names (`'Conv_12'`) blanked.
fn blank(detail: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in one_line(detail).chars() {
        if c == '\'' {
            quoted = !quoted;
            out.push(c);
            if quoted {
                out.push('_');
            }
        } else if !quoted {
            out.push(if c.is_ascii_digit() { '#' } else { c });
        }
    }
    out
}

/// What identifies a failure across graphs: its kind, the backends and levels it shows on, and
/// its message with numbers and names blanked (for mismatches: the dtype, infinities, and
/// whether kiln agrees with the onnx reference where onnxruntime does not).
fn signature(kind: Kind, detail: &str, wheres: &[String]) -> String {
    let backends: Vec<&str> = {
        let mut b: Vec<&str> = wheres
            .iter()
            .map(|w| w.split(' ').next().unwrap_or(""))
            .collect();
        b.sort_by_key(|n| BACKENDS.iter().position(|x| x.name() == *n));
        b.dedup();
        b
    };
    let levels: Vec<&str> = {
        let mut l: Vec<&str> = wheres.iter().filter_map(|w| w.split(' ').nth(1)).collect();
        l.sort_unstable();
        l.dedup();
        l
    };
    let text = if kind == Kind::Mismatch {
        let dtype = if detail.contains("(bool)") {
            " (bool)"
        } else if detail.contains("(i") || detail.contains("(u") {
            " (int)"
        } else {
            ""
        };
        let inf = if detail.contains("inf") { " (inf)" } else { "" };
        let reference = if detail.contains("onnx reference") {
            " [kiln = onnx reference != onnxruntime]"
        } else {
            ""
        };
        format!("mismatch{dtype}{inf}{reference}")
    } else {
        format!(
            "{kind:?}: {}",
            blank(detail).chars().take(200).collect::<String>()
        )
    };
    format!("{} {}: {text}", backends.join("+"), levels.join(""))
}
