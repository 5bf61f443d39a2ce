//! The page of `kiln compare --html`: one self-contained file (inline CSS and SVG, no scripts,
//! no external resources) with the results table, the scatter plot of `report_svg.rs` and, per
//! pair, a bar chart of its instructions per layer. The page is also well-formed XML, so tools
//! (and the tests) can parse it as such. Nothing in it depends on the time or the machine.

use std::fmt::Write as _;

use super::compare::Record;
use super::profile::Profile;
use super::report_svg::{count_label, hex, style_of, target_label};
use super::report_table::{cells, COLUMNS, UNITS};

/// Escapes text for HTML/XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif;
       color: #222; margin: 24px auto; max-width: 1180px; padding: 0 16px; line-height: 1.4; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 20px 0 4px; }
p.meta, p.note { color: #555; font-size: 13px; margin: 4px 0; }
table.results { border-collapse: collapse; font-size: 13px; margin-top: 8px; }
table.results th, table.results td { padding: 4px 8px; border-bottom: 1px solid #e4e4e4; }
table.results th { background: #f4f4f4; text-align: right; position: sticky; top: 0; }
table.results th.l, table.results td.l { text-align: left; }
table.results td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.results tr.failed td { background: #fdecec; }
table.results tr:hover td { background: #f0f6ff; }
td.fail { color: #b22; font-weight: 600; }
svg.marker { vertical-align: middle; margin-right: 4px; }
pre.errors { background: #fdecec; padding: 8px; font-size: 12px; white-space: pre-wrap; }
div.chart { overflow-x: auto; }
";

/// The whole page.
pub fn page(model: &str, records: &[Record], scatter_svg: &str) -> String {
    let mut s = String::new();
    let title = format!("kiln compare: {model}");
    let _ = writeln!(s, "<!DOCTYPE html>");
    let _ = writeln!(
        s,
        "<html lang=\"en\" xmlns=\"http://www.w3.org/1999/xhtml\">"
    );
    let _ = writeln!(s, "<head>");
    let _ = writeln!(s, "<meta charset=\"utf-8\"/>");
    let _ = writeln!(
        s,
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>"
    );
    let _ = writeln!(s, "<meta name=\"generator\" content=\"kiln compare\"/>");
    let _ = writeln!(s, "<title>{}</title>", escape(&title));
    let _ = writeln!(s, "<style>{STYLE}</style>");
    let _ = writeln!(s, "</head>");
    let _ = writeln!(s, "<body>");
    let _ = writeln!(s, "<h1>{}</h1>", escape(&title));
    let targets = super::report_svg::targets(records);
    let configs = super::report_svg::configs(records);
    let ok = records.iter().filter(|r| r.status == "ok").count();
    let _ = writeln!(
        s,
        "<p class=\"meta\">{} pairs: {} target(s) ({}) &#215; {} configuration(s) ({}); {} passed the check of <code>kiln verify</code>.</p>",
        records.len(),
        targets.len(),
        escape(&targets.join(", ")),
        configs.len(),
        escape(&configs.join(", ")),
        ok
    );
    let mut flags: Vec<String> = Vec::new();
    for c in &configs {
        if let Some(r) = records.iter().find(|r| r.config == *c) {
            flags.push(format!(
                "<b>{}</b>: <code>{}</code>",
                escape(c),
                escape(&r.flags)
            ));
        }
    }
    let _ = writeln!(
        s,
        "<p class=\"meta\">Configurations: {}.</p>",
        flags.join("; ")
    );
    results_table(&mut s, records);
    let _ = writeln!(s, "<p class=\"note\">{}</p>", escape(&UNITS.join("; ")));
    let failures: Vec<String> = records
        .iter()
        .flat_map(|r| {
            [("", &r.error), ("evaluation: ", &r.eval_error)]
                .into_iter()
                .filter_map(move |(what, e)| {
                    e.as_ref()
                        .map(|e| format!("{} / {}: {what}{e}", target_label(r), r.config))
                })
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "<h2>Errors</h2>");
        let _ = writeln!(
            s,
            "<pre class=\"errors\">{}</pre>",
            escape(&failures.join("\n"))
        );
    }
    let _ = writeln!(s, "<h2>Flash against instructions</h2>");
    let _ = writeln!(
        s,
        "<p class=\"note\">One point per pair: colour is the target, the marker is the configuration. Down and to the left is smaller and faster.</p>"
    );
    let _ = writeln!(
        s,
        "<div class=\"chart\">{}</div>",
        strip_xml_prolog(scatter_svg)
    );
    let profiled: Vec<&Record> = records.iter().filter(|r| r.profile.is_some()).collect();
    if !profiled.is_empty() {
        let _ = writeln!(s, "<h2>Instructions per layer</h2>");
        let _ = writeln!(
            s,
            "<p class=\"note\">Each pair's profiling build (the same code with a marker call after every layer), its layers by cost: the layer, its instructions, its share of the inference and its instructions per multiply-accumulate. Layers past the {TOP_LAYERS} most costly are summed in one bar.</p>"
        );
        for r in profiled {
            if let Some(p) = &r.profile {
                let (color, _) = style_of(records, r);
                let _ = writeln!(
                    s,
                    "<h3 id=\"{}\">{} / {}</h3>",
                    escape(&anchor(r)),
                    escape(&target_label(r)),
                    escape(&r.config)
                );
                let _ = writeln!(
                    s,
                    "<p class=\"note\">{} layers, {} instructions in the layers ({} in the whole inference of the plain build).</p>",
                    p.layers.len(),
                    count_label(p.layers_sum() as f64),
                    r.instructions.map_or("-".into(), |n| count_label(n as f64)),
                );
                let _ = writeln!(s, "<div class=\"chart\">{}</div>", layer_bars(p, color));
            }
        }
    }
    let _ = writeln!(s, "</body>");
    let _ = writeln!(s, "</html>");
    s
}

fn anchor(r: &Record) -> String {
    format!("layers-{}-{}", target_label(r), r.config)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn strip_xml_prolog(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

fn results_table(s: &mut String, records: &[Record]) {
    let _ = writeln!(s, "<table class=\"results\">");
    let _ = write!(s, "<thead><tr>");
    for (i, c) in COLUMNS.iter().enumerate() {
        let class = if i < 2 { " class=\"l\"" } else { "" };
        let _ = write!(s, "<th{class}>{}</th>", escape(c));
    }
    let _ = writeln!(s, "</tr></thead>");
    let _ = writeln!(s, "<tbody>");
    for r in records {
        let (color, marker) = style_of(records, r);
        let failed = r.status != "ok";
        let _ = write!(s, "<tr{}>", if failed { " class=\"failed\"" } else { "" });
        for (i, cell) in cells(r).iter().enumerate() {
            match i {
                0 => {
                    let _ = write!(
                        s,
                        "<td class=\"l\">{}{}</td>",
                        marker.inline_svg(color, 14),
                        escape(&target_label(r))
                    );
                }
                1 => {
                    let text = if r.profile.is_some() {
                        format!("<a href=\"#{}\">{}</a>", escape(&anchor(r)), escape(cell))
                    } else {
                        escape(cell)
                    };
                    let _ = write!(
                        s,
                        "<td class=\"l\" title=\"{}\">{text}</td>",
                        escape(&r.flags)
                    );
                }
                _ => {
                    let class = if cell == "FAIL" || cell == "no" || cell == "error" {
                        " class=\"fail\""
                    } else {
                        ""
                    };
                    let _ = write!(s, "<td{class}>{}</td>", escape(cell));
                }
            }
        }
        let _ = writeln!(s, "</tr>");
    }
    let _ = writeln!(s, "</tbody>");
    let _ = writeln!(s, "</table>");
}

/// Layers drawn one by one in a per-layer chart; the rest share one bar.
const TOP_LAYERS: usize = 12;

/// A horizontal bar chart of the costliest layers (hand-written SVG: a handful of rects and
/// texts).
pub fn layer_bars(p: &Profile, (r, g, b): (u8, u8, u8)) -> String {
    let mut layers: Vec<(String, u64, Option<f64>)> = p
        .layers
        .iter()
        .map(|l| {
            (
                format!("#{} {} ({})", l.index, l.node, l.op),
                l.instructions,
                l.instructions_per_mac(),
            )
        })
        .collect();
    layers.sort_by_key(|l| std::cmp::Reverse(l.1));
    if layers.len() > TOP_LAYERS {
        let rest = layers.split_off(TOP_LAYERS - 1);
        let sum = rest.iter().map(|l| l.1).sum();
        layers.push((format!("{} other layers", rest.len()), sum, None));
    }
    let total = p.layers_sum().max(1) as f64;
    let max = layers.iter().map(|l| l.1).max().unwrap_or(1).max(1) as f64;
    let (label_w, bar_w, value_w, row_h) = (330.0, 520.0, 230.0, 22.0);
    let width = label_w + bar_w + value_w;
    let height = row_h * layers.len() as f64 + 8.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\" role=\"img\">"
    );
    for (i, (label, n, per_mac)) in layers.iter().enumerate() {
        let y = 4.0 + i as f64 * row_h;
        let w = (bar_w - 4.0) * (*n as f64) / max;
        let label = shorten(label, 52);
        let _ = write!(
            s,
            "<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#333\">{}</text>",
            label_w - 8.0,
            y + row_h * 0.68,
            escape(&label)
        );
        let _ = write!(
            s,
            "<rect x=\"{label_w}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" fill-opacity=\"0.85\"><title>{}: {} instructions</title></rect>",
            y + 3.0,
            w.max(1.0),
            row_h - 6.0,
            hex((r, g, b)),
            escape(&label),
            n
        );
        let per_mac = per_mac.map_or(String::new(), |x| format!(", {x:.2}/MAC"));
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\">{} ({:.1}%{per_mac})</text>",
            label_w + w.max(1.0) + 6.0,
            y + row_h * 0.68,
            count_label(*n as f64),
            100.0 * *n as f64 / total
        );
    }
    s.push_str("</svg>");
    s
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
