//! Plots, PNG or SVG by the file's extension. Text uses the bundled DejaVu
//! Sans (assets/, Bitstream Vera licence), so no system font is needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::Report;
use crate::{Error, TraceResult};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The bundled file is a valid font; a failure would only lose text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn colour(policy: &str) -> RGBColor {
    match policy {
        "hpa" => RGBColor(214, 39, 40),
        "threshold" => RGBColor(255, 127, 14),
        "predictive" => RGBColor(31, 119, 180),
        "hybrid" => RGBColor(44, 160, 44),
        "oracle" => RGBColor(90, 90, 90),
        _ => RGBColor(148, 103, 189),
    }
}

type Drawn = Result<(), String>;

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
}

fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl Fn(DrawingArea<BitMapBackend<'_>, Shift>) -> Drawn,
    svg: impl Fn(DrawingArea<SVGBackend<'_>, Shift>) -> Drawn,
) -> Result<(), Error> {
    register_font();
    let result = match path.extension().and_then(|e| e.to_str()) {
        Some("png") => draw(BitMapBackend::new(path, size).into_drawing_area()),
        Some("svg") => svg(SVGBackend::new(path, size).into_drawing_area()),
        _ => Err("the file must end in .png or .svg".into()),
    };
    result.map_err(|message| Error::Plot {
        path: path.display().to_string(),
        message,
    })
}

/// Demand against each policy's ready capacity, and replicas, over the scored part.
pub fn timeline(t: &TraceResult, path: &Path) -> Result<(), Error> {
    render(
        path,
        (1400, 900),
        |a| draw_timeline(t, a),
        |a| draw_timeline(t, a),
    )
}

fn draw_timeline<DB: DrawingBackend>(t: &TraceResult, root: DrawingArea<DB, Shift>) -> Drawn {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let tl = &t.timeline;
    let start = tl.at.first().copied().unwrap_or(t.scored_from);
    let hours: Vec<f64> = tl
        .at
        .iter()
        .map(|a| (*a - start).as_seconds_f64() / 3600.0)
        .collect();
    let x_max = hours.last().copied().unwrap_or(1.0).max(1e-3);
    let y_max = tl
        .demand
        .iter()
        .copied()
        .chain(tl.policies.iter().flat_map(|p| p.1.iter().copied()))
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let r_max = tl
        .policies
        .iter()
        .flat_map(|p| p.2.iter().copied())
        .max()
        .unwrap_or(1)
        + 1;
    let (top, bottom) = root.split_vertically(520);

    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("{}: demand against ready capacity", t.trace),
            ("sans-serif", 24),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("hours into the scored part")
        .y_desc("CPU, cores")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (name, capacity, _) in &tl.policies {
        let c = colour(name);
        chart
            .draw_series(LineSeries::new(
                hours.iter().copied().zip(capacity.iter().copied()),
                c.stroke_width(1),
            ))
            .map_err(e)?
            .label(format!("{name} ready capacity"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .draw_series(LineSeries::new(
            hours.iter().copied().zip(tl.demand.iter().copied()),
            BLACK.stroke_width(2),
        ))
        .map_err(e)?
        .label("demand")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(2)));
    legend(&mut chart).map_err(e)?;

    let mut chart = ChartBuilder::on(&bottom)
        .caption("replicas (starting pods included)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0u32..r_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("hours into the scored part")
        .y_desc("replicas")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (name, _, replicas) in &tl.policies {
        let c = colour(name);
        chart
            .draw_series(LineSeries::new(
                hours.iter().copied().zip(replicas.iter().copied()),
                c.stroke_width(1),
            ))
            .map_err(e)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    legend(&mut chart).map_err(e)?;
    root.present().map_err(e)
}

/// Each policy's mean violation time against its cost relative to the oracle.
pub fn summary(r: &Report, path: &Path) -> Result<(), Error> {
    render(path, (900, 600), |a| draw_summary(r, a), |a| draw_summary(r, a))
}

fn draw_summary<DB: DrawingBackend>(r: &Report, root: DrawingArea<DB, Shift>) -> Drawn {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let points: Vec<(String, f64, f64)> = r
        .summary
        .iter()
        .map(|s| {
            (
                s.policy.clone(),
                s.cost_vs_oracle.unwrap_or(1.0) * 100.0,
                s.mean_violation_hours,
            )
        })
        .collect();
    let x_max = points.iter().map(|p| p.1).fold(100.0, f64::max) * 1.1;
    let x_min = points.iter().map(|p| p.1).fold(100.0, f64::min) * 0.9;
    let y_max = points.iter().map(|p| p.2).fold(0.1, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{} trace(s): violation against cost (lower left is better)",
                r.traces.len()
            ),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x_min..x_max, 0.0..y_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("replica-hours, % of the oracle's (mean over traces)")
        .y_desc("SLO violation, hours (mean over traces)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (name, x, y) in &points {
        let c = colour(name);
        // The dot, and its name beside it.
        let mark = EmptyElement::at((*x, *y))
            + Circle::new((0, 0), 7, c.filled())
            + Text::new(name.clone(), (10, -18), ("sans-serif", 16).into_font().color(&c));
        chart.draw_series(std::iter::once(mark)).map_err(e)?;
    }
    root.present().map_err(e)
}
