//! The scatter plot of `kiln compare --svg` (also inlined in the `--html` page): flash against
//! instructions per inference, one point per (target, config) pair, targets by colour, configs
//! by marker, every point labelled. Drawn with plotters' SVG backend, so text stays SVG text
//! and the file needs no fonts or images.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::compare::Record;

/// Colours for targets, in order of first appearance (Tableau 10, readable on white and for
/// the common colour-vision deficiencies when paired with the marker shapes).
pub const PALETTE: [(u8, u8, u8); 8] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
];

/// Marker shapes for configs, in order of first appearance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Circle,
    Triangle,
    Square,
    Diamond,
    TriangleDown,
    Pentagon,
    Hexagon,
    Star,
}

pub const MARKERS: [Marker; 8] = [
    Marker::Circle,
    Marker::Triangle,
    Marker::Square,
    Marker::Diamond,
    Marker::TriangleDown,
    Marker::Pentagon,
    Marker::Hexagon,
    Marker::Star,
];

impl Marker {
    /// The outline centred on (cx, cy), about `r` pixels in radius (a circle is a 24-gon).
    pub fn points(self, cx: f64, cy: f64, r: f64) -> Vec<(f64, f64)> {
        let regular = |n: usize, start: f64, radius: f64| -> Vec<(f64, f64)> {
            (0..n)
                .map(|i| {
                    let a = start + i as f64 * std::f64::consts::TAU / n as f64;
                    (cx + radius * a.cos(), cy + radius * a.sin())
                })
                .collect()
        };
        let up = -std::f64::consts::FRAC_PI_2;
        match self {
            Marker::Circle => regular(24, 0.0, r * 0.9),
            Marker::Triangle => regular(3, up, r * 1.15),
            Marker::TriangleDown => regular(3, -up, r * 1.15),
            Marker::Square => regular(4, std::f64::consts::FRAC_PI_4, r * 1.05),
            Marker::Diamond => regular(4, up, r * 1.15),
            Marker::Pentagon => regular(5, up, r),
            Marker::Hexagon => regular(6, 0.0, r),
            Marker::Star => (0..10)
                .map(|i| {
                    let a = up + i as f64 * std::f64::consts::PI / 5.0;
                    let radius = if i % 2 == 0 { r * 1.25 } else { r * 0.55 };
                    (cx + radius * a.cos(), cy + radius * a.sin())
                })
                .collect(),
        }
    }

    /// A small standalone SVG of the marker, for tables and legends in HTML.
    pub fn inline_svg(self, color: (u8, u8, u8), size: u32) -> String {
        let c = f64::from(size) / 2.0;
        let points: Vec<String> = self
            .points(c, c, c * 0.62)
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        format!(
            "<svg class=\"marker\" width=\"{size}\" height=\"{size}\" viewBox=\"0 0 {size} {size}\" aria-hidden=\"true\"><polygon points=\"{}\" fill=\"{}\" stroke=\"#333\" stroke-width=\"0.8\"/></svg>",
            points.join(" "),
            hex(color)
        )
    }
}

pub fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// Targets (with their board when it is not the default) in order of first appearance.
pub fn targets(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in records {
        let t = target_label(r);
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// Configs in order of first appearance.
pub fn configs(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in records {
        if !out.contains(&r.config) {
            out.push(r.config.clone());
        }
    }
    out
}

/// `cortex-m4`, or `rv32imac@sifive_e` off the default board.
pub fn target_label(r: &Record) -> String {
    let default = kiln_targets::find_target(&r.target).and_then(|t| t.boards.first().copied());
    if default == Some(r.board.as_str()) {
        r.target.clone()
    } else {
        format!("{}@{}", r.target, r.board)
    }
}

/// A target's colour and a config's marker.
pub fn style_of(records: &[Record], r: &Record) -> ((u8, u8, u8), Marker) {
    let t = targets(records)
        .iter()
        .position(|t| *t == target_label(r))
        .unwrap_or(0);
    let c = configs(records)
        .iter()
        .position(|c| *c == r.config)
        .unwrap_or(0);
    (PALETTE[t % PALETTE.len()], MARKERS[c % MARKERS.len()])
}

/// `47.6M`, `1.92G`, `950k`.
pub fn count_label(x: f64) -> String {
    let (v, unit) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    let digits = if v >= 100.0 || v.fract() == 0.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{unit}")
}

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 640;
const LEGEND_WIDTH: u32 = 230;
const LABEL_SIZE: f64 = 13.0;

/// Approximate width in pixels of `text` in the sans-serif label font.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.56
}

type Rect = (f64, f64, f64, f64);

fn overlap(a: Rect, b: Rect) -> f64 {
    let w = (a.2.min(b.2) - a.0.max(b.0)).max(0.0);
    let h = (a.3.min(b.3) - a.1.max(b.1)).max(0.0);
    w * h
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

/// The plot as an SVG document.
pub fn scatter(records: &[Record], model: &str) -> anyhow::Result<String> {
    let points: Vec<(&Record, f64, f64)> = records
        .iter()
        .filter_map(|r| Some((r, r.instructions? as f64, r.flash_bytes? as f64 / 1024.0)))
        .collect();
    let failed = records.len() - points.len();
    let (xmin, xmax) = points.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (xmin, xmax) = if points.is_empty() {
        (1e5, 1e9)
    } else {
        (xmin.max(1.0) / 2.0, xmax * 2.0)
    };
    let ymax = points.iter().map(|p| p.2).fold(1.0f64, f64::max) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (plot_area, _) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(
                format!("Flash against instructions: {model}"),
                ("sans-serif", 19),
            )
            .margin(18)
            .x_label_area_size(52)
            .y_label_area_size(70)
            .build_cartesian_2d((xmin..xmax).log_scale(), 0.0..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("instructions per inference (log scale)")
            .y_desc("flash (KiB)")
            // The x labels are drawn below (plotters picks uneven ones on short log ranges).
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(err)?;
        let plot = chart.plotting_area();
        let (px_range, py_range) = plot.get_pixel_range();
        let bounds: Rect = (
            f64::from(px_range.start),
            f64::from(py_range.start),
            f64::from(px_range.end),
            f64::from(py_range.end),
        );
        root.draw(&Text::new(
            "better: down and to the left",
            (bounds.0 as i32 + 8, bounds.1 as i32 + 6),
            ("sans-serif", 12)
                .into_font()
                .color(&RGBColor(120, 120, 120)),
        ))
        .map_err(err)?;
        // The x axis labelled at 1, 2 and 5 times each power of ten (the powers darker), so a
        // reader can place a point without counting grid lines.
        let mut decade = 10f64.powf(xmin.log10().floor());
        while decade <= xmax {
            for (x, size, grey) in [
                (decade, 13, 0),
                (2.0 * decade, 12, 110),
                (5.0 * decade, 12, 110),
            ] {
                if x >= xmin && x <= xmax {
                    let (px, _) = chart.backend_coord(&(x, 0.0));
                    root.draw(&Text::new(
                        count_label(x),
                        (px, py_range.end + 6),
                        ("sans-serif", size)
                            .into_font()
                            .color(&RGBColor(grey, grey, grey))
                            .pos(Pos::new(HPos::Center, VPos::Top)),
                    ))
                    .map_err(err)?;
                }
            }
            decade *= 10.0;
        }
        // Markers first, then labels placed around them where they collide least.
        let radius = 7.0;
        let pixels: Vec<(f64, f64)> = points
            .iter()
            .map(|&(_, x, y)| {
                let (px, py) = chart.backend_coord(&(x, y));
                (f64::from(px), f64::from(py))
            })
            .collect();
        for (&(r, _, _), &(px, py)) in points.iter().zip(&pixels) {
            let (color, marker) = style_of(records, r);
            let outline: Vec<(i32, i32)> = marker
                .points(px, py, radius)
                .iter()
                .map(|&(x, y)| (x.round() as i32, y.round() as i32))
                .collect();
            root.draw(&Polygon::new(
                outline.clone(),
                // A little translucent, so a point hidden under another still shows.
                RGBColor(color.0, color.1, color.2).mix(0.8).filled(),
            ))
            .map_err(err)?;
            let mut closed = outline;
            closed.push(closed[0]);
            root.draw(&PathElement::new(
                closed,
                RGBColor(40, 40, 40).stroke_width(1),
            ))
            .map_err(err)?;
        }
        let mut taken: Vec<Rect> = pixels
            .iter()
            .map(|&(x, y)| (x - radius, y - radius, x + radius, y + radius))
            .collect();
        taken.push((bounds.0, bounds.1, bounds.0 + 200.0, bounds.1 + 22.0));
        for (&(r, _, _), &(px, py)) in points.iter().zip(&pixels) {
            let text = format!("{} {}", target_label(r), r.config);
            let w = text_width(&text, LABEL_SIZE);
            let h = LABEL_SIZE;
            let gap = radius + 3.0;
            let mut best: Option<(f64, f64, f64, bool)> = None;
            for (dist, leader) in [(0.0, false), (14.0, true), (30.0, true)] {
                let candidates = [
                    (px + gap + dist, py - h / 2.0),
                    (px - gap - dist - w, py - h / 2.0),
                    (px - w / 2.0, py - gap - dist - h),
                    (px - w / 2.0, py + gap + dist),
                    (px + gap + dist * 0.7, py - gap - dist * 0.7 - h),
                    (px + gap + dist * 0.7, py + gap + dist * 0.7),
                    (px - gap - dist * 0.7 - w, py - gap - dist * 0.7 - h),
                    (px - gap - dist * 0.7 - w, py + gap + dist * 0.7),
                ];
                for (x, y) in candidates {
                    let rect = (x - 1.0, y - 1.0, x + w + 1.0, y + h + 1.0);
                    let outside = (bounds.0 - rect.0).max(0.0)
                        + (rect.2 - bounds.2).max(0.0)
                        + (bounds.1 - rect.1).max(0.0)
                        + (rect.3 - bounds.3).max(0.0);
                    let cost = taken.iter().map(|&t| overlap(rect, t)).sum::<f64>()
                        + outside * 1000.0
                        + dist * 2.0;
                    if best.is_none_or(|b| cost < b.2) {
                        best = Some((x, y, cost, leader));
                    }
                }
                if best.is_some_and(|b| b.2 <= dist * 2.0) {
                    break;
                }
            }
            let Some((x, y, _, leader)) = best else {
                continue;
            };
            if leader {
                let (cx, cy) = (
                    (x + w / 2.0).clamp(x, x + w),
                    if y > py { y } else { y + h },
                );
                root.draw(&PathElement::new(
                    vec![(px as i32, py as i32), (cx as i32, cy as i32)],
                    RGBColor(150, 150, 150).stroke_width(1),
                ))
                .map_err(err)?;
            }
            taken.push((x - 1.0, y - 1.0, x + w + 1.0, y + h + 1.0));
            root.draw(&Text::new(
                text,
                (x.round() as i32, y.round() as i32),
                ("sans-serif", LABEL_SIZE)
                    .into_font()
                    .color(&RGBColor(30, 30, 30)),
            ))
            .map_err(err)?;
        }
        // The legend, right of the plot.
        let lx = f64::from(WIDTH - LEGEND_WIDTH) + 10.0;
        let mut ly = 70.0;
        let heading = ("sans-serif", 14).into_font().style(FontStyle::Bold);
        let entry = ("sans-serif", 13).into_font();
        root.draw(&Text::new(
            "target (colour)",
            (lx as i32, ly as i32),
            heading.clone(),
        ))
        .map_err(err)?;
        ly += 24.0;
        for (i, t) in targets(records).iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            let circle: Vec<(i32, i32)> = Marker::Circle
                .points(lx + 8.0, ly + 7.0, 6.5)
                .iter()
                .map(|&(x, y)| (x.round() as i32, y.round() as i32))
                .collect();
            root.draw(&Polygon::new(circle, RGBColor(c.0, c.1, c.2).filled()))
                .map_err(err)?;
            root.draw(&Text::new(
                t.clone(),
                (lx as i32 + 22, ly as i32),
                entry.clone(),
            ))
            .map_err(err)?;
            ly += 22.0;
        }
        ly += 14.0;
        root.draw(&Text::new(
            "config (marker)",
            (lx as i32, ly as i32),
            heading,
        ))
        .map_err(err)?;
        ly += 24.0;
        for (i, c) in configs(records).iter().enumerate() {
            let marker = MARKERS[i % MARKERS.len()];
            let outline: Vec<(i32, i32)> = marker
                .points(lx + 8.0, ly + 7.0, 6.5)
                .iter()
                .map(|&(x, y)| (x.round() as i32, y.round() as i32))
                .collect();
            root.draw(&Polygon::new(
                outline.clone(),
                RGBColor(200, 200, 200).filled(),
            ))
            .map_err(err)?;
            let mut closed = outline;
            closed.push(closed[0]);
            root.draw(&PathElement::new(
                closed,
                RGBColor(40, 40, 40).stroke_width(1),
            ))
            .map_err(err)?;
            let flags = records
                .iter()
                .find(|r| r.config == *c)
                .map(|r| r.flags.clone())
                .unwrap_or_default();
            root.draw(&Text::new(
                c.clone(),
                (lx as i32 + 22, ly as i32),
                entry.clone(),
            ))
            .map_err(err)?;
            if !flags.is_empty() && flags != format!("-{c}") {
                root.draw(&Text::new(
                    shorten(&flags, 28),
                    (lx as i32 + 22, ly as i32 + 15),
                    ("sans-serif", 11)
                        .into_font()
                        .color(&RGBColor(110, 110, 110)),
                ))
                .map_err(err)?;
                ly += 14.0;
            }
            ly += 22.0;
        }
        if failed > 0 {
            ly += 10.0;
            root.draw(&Text::new(
                format!("{failed} failed pair(s) not shown"),
                (lx as i32, ly as i32),
                ("sans-serif", 12).into_font().color(&RGBColor(180, 40, 40)),
            ))
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}
