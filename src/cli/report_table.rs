//! The text forms of `kiln compare`'s results: the aligned table, Markdown and CSV (the
//! JSON form is the records serialized as they are), and the failed pairs' errors.

use super::compare::Record;

/// Formats bytes, counts and ratios for the tables ("-" for a missing value).
fn cell_u(x: Option<u64>) -> String {
    x.map_or("-".into(), |x| x.to_string())
}

fn cell_err(x: Option<f64>) -> String {
    match x {
        Some(0.0) => "0".into(),
        Some(x) if x.is_finite() => format!("{x:.1e}"),
        Some(_) => "inf".into(),
        None => "-".into(),
    }
}

/// The column headers of the text and Markdown tables.
pub const COLUMNS: [&str; 15] = [
    "target",
    "config",
    "flash",
    "code",
    "weights",
    "RAM",
    "arena",
    "I/O",
    "stack",
    "instructions",
    "insn/MAC",
    "max err",
    "check",
    "top-1",
    "fits",
];

/// A row's cells, in [`COLUMNS`] order.
pub fn cells(r: &Record) -> Vec<String> {
    let top1 = match (r.top1, &r.eval_error) {
        (Some(t), _) => format!("{:.2}%", 100.0 * t),
        (None, Some(_)) => "error".into(),
        _ => "-".into(),
    };
    let fits = match r.fits {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    if r.instructions.is_none() {
        let mut row = vec![super::report_svg::target_label(r), r.config.clone()];
        row.extend(std::iter::repeat_n("-".to_string(), COLUMNS.len() - 4));
        row.push(top1);
        row.push(fits.into());
        return row;
    }
    vec![
        super::report_svg::target_label(r),
        r.config.clone(),
        cell_u(r.flash_bytes),
        cell_u(r.code_bytes),
        cell_u(r.weight_bytes),
        cell_u(r.ram_bytes),
        cell_u(r.arena_bytes),
        cell_u(r.io_bytes),
        cell_u(r.stack_bytes),
        cell_u(r.instructions),
        r.instructions_per_mac
            .map_or("-".into(), |x| format!("{x:.2}")),
        cell_err(r.max_abs_error_vs_float),
        match r.check_passed {
            Some(true) => "pass".into(),
            Some(false) => "FAIL".into(),
            None => "-".into(),
        },
        top1,
        fits.into(),
    ]
}

/// The results as aligned text (or Markdown), with a line on units.
pub fn table(records: &[Record], markdown: bool) -> String {
    use std::fmt::Write as _;
    let rows: Vec<Vec<String>> = records.iter().map(cells).collect();
    let mut widths: Vec<usize> = COLUMNS.iter().map(|c| c.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, row: &[String]| {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| {
                if i < 2 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        if markdown {
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        } else {
            let _ = writeln!(s, "{}", cells.join("  ").trim_end());
        }
    };
    let header: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    line(&mut s, &header);
    if markdown {
        let rule: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                if i < 2 {
                    format!(":{}", "-".repeat(w.max(2) - 1))
                } else {
                    format!("{}:", "-".repeat(w.max(2) - 1))
                }
            })
            .collect();
        let _ = writeln!(s, "| {} |", rule.join(" | "));
    }
    for row in &rows {
        line(&mut s, row);
    }
    if markdown {
        s.push('\n');
    }
    for line in UNITS {
        let _ = writeln!(s, "{line}");
    }
    s
}

/// What the columns measure, printed under the table.
pub const UNITS: [&str; 2] = [
    "sizes in bytes: flash = code + constants + data image (weights among the constants), RAM = static data and bss + stack peak, I/O = inputs and outputs",
    "instructions per inference; max err: against the float model; check: kiln verify's pass rule; fits: in the board's flash and RAM",
];

/// The failed pairs' errors, in full, after the table.
pub fn errors(records: &[Record]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for r in records {
        for (what, e) in [("", &r.error), ("evaluation: ", &r.eval_error)] {
            if let Some(e) = e {
                let text: Vec<&str> = e.lines().take(8).collect();
                let _ = writeln!(
                    s,
                    "{} / {}: {what}{}",
                    super::report_svg::target_label(r),
                    r.config,
                    text.join("\n    ")
                );
            }
        }
    }
    s
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// The CSV columns: the JSON row fields but `layers`, in declaration order.
pub const CSV_FIELDS: [&str; 32] = [
    "target",
    "board",
    "config",
    "flags",
    "status",
    "error",
    "flash_bytes",
    "code_bytes",
    "weight_bytes",
    "rodata_bytes",
    "data_bytes",
    "ram_bytes",
    "static_ram_bytes",
    "arena_bytes",
    "io_bytes",
    "stack_bytes",
    "instructions",
    "macs",
    "instructions_per_mac",
    "max_abs_error_vs_float",
    "check_passed",
    "check_max_abs_error",
    "check_tolerance",
    "eval_samples",
    "top1",
    "float_top1",
    "eval_error",
    "fits",
    "board_flash_bytes",
    "board_ram_bytes",
    "layers_instructions",
    "layers",
];

/// The results as CSV: the JSON row fields but `layers`, in the same units.
pub fn csv(records: &[Record]) -> String {
    let fields = &CSV_FIELDS[..CSV_FIELDS.len() - 1];
    let mut out = fields.join(",");
    out.push('\n');
    for r in records {
        let Ok(serde_json::Value::Object(map)) = serde_json::to_value(r) else {
            continue;
        };
        let cells: Vec<String> = fields
            .iter()
            .map(|&k| match map.get(k) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => csv_field(s),
                Some(other) => other.to_string(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}
