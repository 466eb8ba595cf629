//! Charts as SVG text, drawn by plotters' SVG backend (no fonts, no
//! bitmaps): the daily usage bars of a period and the overview's
//! sparklines. Labels are dates and numbers only, and plotters escapes
//! text, so the result is safe to embed in a page as is.

use chrono::NaiveDate;
use plotters::prelude::*;

const BAR: RGBColor = RGBColor(37, 99, 235);
const FAINT: RGBColor = RGBColor(203, 213, 225);

/// `12345` → `12.3k`, for axis labels.
fn compact(v: i64) -> String {
    match v {
        v if v >= 10_000_000 => format!("{}M", v / 1_000_000),
        v if v >= 1_000_000 => format!("{:.1}M", v as f64 / 1e6),
        v if v >= 10_000 => format!("{}k", v / 1000),
        v if v >= 1000 => format!("{:.1}k", v as f64 / 1e3),
        v => v.to_string(),
    }
}

/// Bars of one value per day. Empty when there are no days.
pub fn daily(days: &[(NaiveDate, i64)]) -> String {
    if days.is_empty() {
        return String::new();
    }
    let mut svg = String::new();
    if let Err(e) = draw_daily(&mut svg, days) {
        tracing::warn!(error = %e, "failed to draw the daily chart");
        return String::new();
    }
    svg
}

fn draw_daily(svg: &mut String, days: &[(NaiveDate, i64)]) -> Result<(), String> {
    let n = days.len() as i32;
    let top = days.iter().map(|d| d.1).max().unwrap_or(0).max(1);
    let top = top + top / 10 + 1;
    let root = SVGBackend::with_string(svg, (600, 260)).into_drawing_area();
    let mut chart = ChartBuilder::on(&root)
        .margin(10)
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d((0..n).into_segmented(), 0i64..top)
        .map_err(|e| e.to_string())?;
    let label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
            days.get(*i as usize).map(|(d, _)| d.format("%-d %b").to_string()).unwrap_or_default()
        }
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .bold_line_style(FAINT)
        .axis_style(FAINT)
        .x_labels(6)
        .y_labels(5)
        .x_label_formatter(&label)
        .y_label_formatter(&|v| compact(*v))
        .label_style(("sans-serif", 17))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(days.iter().enumerate().map(|(i, (_, v))| {
            let i = i as i32;
            let mut bar = Rectangle::new([(SegmentValue::Exact(i), 0), (SegmentValue::Exact(i + 1), *v)], BAR.filled());
            bar.set_margin(0, 0, 2, 2);
            bar
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// A small line of values, oldest first, without axes.
pub fn sparkline(values: &[i64]) -> String {
    if values.len() < 2 {
        return String::new();
    }
    let mut svg = String::new();
    let drawn = (|| -> Result<(), String> {
        let root = SVGBackend::with_string(&mut svg, (120, 28)).into_drawing_area();
        let top = values.iter().copied().max().unwrap_or(0).max(1);
        let mut chart = ChartBuilder::on(&root)
            .margin(3)
            .build_cartesian_2d(0..(values.len() as i32 - 1), 0i64..top)
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(values.iter().enumerate().map(|(i, v)| (i as i32, *v)), BAR.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    })();
    match drawn {
        Ok(()) => svg,
        Err(e) => {
            tracing::warn!(error = %e, "failed to draw a sparkline");
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_a_view_box_and_no_inline_style() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let svg = daily(&[(day(1), 10), (day(2), 0), (day(3), 12_500)]);
        assert!(svg.starts_with("<svg") && svg.contains("viewBox"), "{svg}");
        assert!(svg.contains("12.5k") || svg.contains("10k"), "{svg}");
        assert!(!svg.contains("style="), "the page's CSP forbids inline styles: {svg}");
        let line = sparkline(&[0, 3, 1, 7]);
        assert!(line.contains("<polyline") || line.contains("<path"), "{line}");
        assert_eq!(sparkline(&[5]), "");
        assert_eq!(daily(&[]), "");
        assert_eq!(compact(999), "999");
        assert_eq!(compact(1500), "1.5k");
        assert_eq!(compact(2_000_000), "2.0M");
    }
}
