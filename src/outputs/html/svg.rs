//! The SVG chart every time chart of the page is drawn on.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::escape;

/// An SVG chart: data coordinates mapped into a plot area with axes and a few ticks.
pub(super) struct Chart {
    width: f64,
    height: f64,
    x_max: f64,
    y_max: f64,
    pub(super) body: String,
    /// Bars and marks each with its own element and tooltip; when there are many, they are
    /// drawn as one path per class (in `paths`), without tooltips, to keep the page small.
    pub(super) titled: bool,
    paths: BTreeMap<&'static str, String>,
}

/// Buckets beyond which a chart's bars and marks lose their tooltips (see [`Chart::titled`]).
pub(super) const TITLED_BUCKETS: usize = 120;

const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 24.0;

impl Chart {
    pub(super) fn new(x_max: f64, y_max: f64) -> Chart {
        Chart {
            width: 900.0,
            height: 200.0,
            x_max: x_max.max(1e-9),
            // Four gridlines at round values.
            y_max: nice_step(y_max / 4.0) * 4.0,
            body: String::new(),
            titled: true,
            paths: BTreeMap::new(),
        }
    }

    pub(super) fn x(&self, v: f64) -> f64 {
        LEFT + v / self.x_max * (self.width - LEFT - RIGHT)
    }

    pub(super) fn y(&self, v: f64) -> f64 {
        self.height - BOTTOM - v.min(self.y_max) / self.y_max * (self.height - TOP - BOTTOM)
    }

    /// A bar over `[x0, x1]` up to `v`.
    pub(super) fn bar(&mut self, x0: f64, x1: f64, v: f64, class: &'static str, title: &str) {
        let (px0, px1) = (self.x(x0), self.x(x1));
        let (top, base) = (self.y(v), self.y(0.0));
        if !self.titled {
            let d = self.paths.entry(class).or_default();
            let _ = write!(
                d,
                "M{px0:.1},{base:.1}V{top:.1}H{:.1}V{base:.1}Z",
                px0 + (px1 - px0 - 0.5).max(0.6)
            );
            return;
        }
        let _ = write!(
            self.body,
            "<rect class=\"{class}\" x=\"{px0:.1}\" y=\"{top:.1}\" width=\"{:.2}\" height=\"{:.1}\"><title>{}</title></rect>",
            (px1 - px0 - 0.5).max(0.6),
            (base - top).max(0.0),
            escape(title)
        );
    }

    /// A line through the points, broken where a point is missing.
    pub(super) fn line(&mut self, points: &[(f64, Option<f64>)], class: &str) {
        let mut d = String::new();
        let mut pen_down = false;
        for &(x, y) in points {
            match y {
                Some(y) => {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        self.x(x),
                        self.y(y)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !d.is_empty() {
            let _ = write!(
                self.body,
                "<path class=\"{class}\" d=\"{}\"/>",
                d.trim_end()
            );
        }
    }

    /// A horizontal line at `v`, labelled.
    pub(super) fn level(&mut self, v: f64, class: &str, label: &str) {
        let y = self.y(v);
        let _ = write!(
            self.body,
            "<path class=\"{class}\" d=\"M{LEFT:.1},{y:.1} H{:.1}\"/><text class=\"levellabel\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            self.width - RIGHT,
            self.width - RIGHT - 2.0,
            (y - 3.0).max(TOP + 8.0),
            escape(label)
        );
    }

    /// A marker above the bar at `x`: 429s (a red triangle) or retries (an orange dot).
    pub(super) fn mark(&mut self, x: f64, class: &'static str, title: &str) {
        let px = self.x(x);
        if !self.titled {
            let d = self.paths.entry(class).or_default();
            let _ = if class == "limited" {
                write!(d, "M{:.1},{:.1}l4,-7l4,7z", px - 4.0, TOP + 7.0)
            } else {
                write!(d, "M{:.1},{:.1}h6v6h-6z", px - 3.0, TOP + 11.0)
            };
            return;
        }
        let shape = if class == "limited" {
            format!(
                "<path class=\"limited\" d=\"M{:.1},{:.1} l4,-7 l4,7 z\">",
                px - 4.0,
                TOP + 7.0
            )
        } else {
            format!(
                "<circle class=\"{class}\" cx=\"{px:.1}\" cy=\"{:.1}\" r=\"3\">",
                TOP + 14.0
            )
        };
        let tag = if class == "limited" { "path" } else { "circle" };
        let _ = write!(self.body, "{shape}<title>{}</title></{tag}>", escape(title));
    }

    pub(super) fn finish(self, label: &str, x_unit: &str, y_unit: &str) -> String {
        let mut s = format!(
            "<svg class=\"chart\" viewBox=\"0 0 {w} {hgt}\" width=\"100%\" role=\"img\" aria-label=\"{}\">",
            escape(label),
            w = self.width,
            hgt = self.height
        );
        let base = self.y(0.0);
        for i in 0..=4 {
            let v = self.y_max * f64::from(i) / 4.0;
            let y = self.y(v);
            let _ = write!(
                s,
                "<path class=\"grid\" d=\"M{LEFT},{y:.1} H{:.1}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                self.width - RIGHT,
                LEFT - 4.0,
                y + 4.0,
                tick(v)
            );
        }
        let step = nice_step(self.x_max / 5.0);
        for i in 0..=((self.x_max / step).floor() as u32).min(10) {
            let v = step * f64::from(i);
            let _ = write!(
                s,
                "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}{x_unit}</text>",
                self.x(v),
                base + 16.0,
                tick(v)
            );
        }
        let _ = write!(
            s,
            "<text class=\"unit\" x=\"4\" y=\"{:.1}\">{}</text>",
            TOP - 8.0,
            escape(y_unit)
        );
        s.push_str(&self.body);
        for (class, d) in &self.paths {
            let _ = write!(s, "<path class=\"{class}\" d=\"{d}\"/>");
        }
        s.push_str("</svg>\n");
        s
    }
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `v` (1 for nothing).
pub(super) fn nice_step(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&step| step >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

fn tick(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
