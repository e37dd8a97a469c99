//! Plots, PNG or SVG by the file's extension. Text uses the bundled DejaVu
//! Sans (assets/, Bitstream Vera licence), so no system font is needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

use chrono::{DateTime, TimeDelta, Utc};

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

/// A dash pattern per policy (dash, gap in pixels; solid for none), so
/// policies whose lines overlap stay apart.
fn dashes(policy: &str) -> Option<(u32, u32)> {
    match policy {
        "hpa" => None,
        "threshold" => Some((10, 4)),
        "predictive" => Some((6, 3)),
        "hybrid" => Some((3, 3)),
        _ => Some((14, 6)),
    }
}

/// Draws one policy's line in its colour and dash pattern.
fn policy_line<'a, DB: DrawingBackend + 'a, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    name: &str,
    points: Vec<(f64, Y::ValueType)>,
    label: String,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    Y: Ranged + 'static,
    Y::ValueType: Copy + 'static,
{
    let c = colour(name);
    let style = c.stroke_width(if dashes(name).is_none() { 2 } else { 1 });
    let legend = move |(x, y): (i32, i32)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2));
    match dashes(name) {
        None => chart
            .draw_series(LineSeries::new(points, style))?
            .label(label)
            .legend(legend),
        Some((dash, gap)) => chart
            .draw_series(DashedLineSeries::new(points, dash, gap, style))?
            .label(label)
            .legend(legend),
    };
    Ok(())
}

/// The busiest `width` of `at` (the most demand in it): the index range to
/// show; the whole span when it is not much longer than `width`.
pub fn busiest(at: &[DateTime<Utc>], values: &[f64], width: TimeDelta) -> std::ops::Range<usize> {
    let (Some(first), Some(last)) = (at.first(), at.last()) else {
        return 0..0;
    };
    if *last - *first <= width + width / 2 {
        return 0..at.len();
    }
    let value = |i: usize| values.get(i).copied().filter(|v| v.is_finite()).unwrap_or(0.0);
    let (mut best, mut best_sum, mut sum, mut end) = (0..0, f64::NEG_INFINITY, 0.0, 0);
    for start in 0..at.len() {
        while end < at.len() && at[end] - at[start] < width {
            sum += value(end);
            end += 1;
        }
        if sum > best_sum {
            (best, best_sum) = (start..end, sum);
        }
        sum -= value(start);
    }
    best
}

type Drawn = Result<(), String>;

/// Hours on x, a value from 0 on y.
type HoursChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A chart of hours against a value from 0, with its mesh drawn.
fn hours_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    (caption, size): (String, u32),
    (x_max, y_max): (f64, f64),
    x_desc: &str,
    y_desc: &str,
) -> Result<HoursChart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", size))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()?;
    Ok(chart)
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(position)
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

/// Which part of a trace a plot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// The busiest day (the whole span when it is not much longer).
    BusiestDay,
    /// All of the scored part.
    Full,
}

/// Demand against each policy's ready capacity, and replicas, over the
/// scored part or its busiest day.
pub fn timeline(t: &TraceResult, span: Span, path: &Path) -> Result<(), Error> {
    render(
        path,
        (1400, 900),
        |a| draw_timeline(t, span, a),
        |a| draw_timeline(t, span, a),
    )
}

fn draw_timeline<DB: DrawingBackend>(t: &TraceResult, span: Span, root: DrawingArea<DB, Shift>) -> Drawn {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let tl = &t.timeline;
    let range = match span {
        Span::Full => 0..tl.at.len(),
        Span::BusiestDay => busiest(&tl.at, &tl.demand, TimeDelta::days(1)),
    };
    let whole = range.len() == tl.at.len();
    let start = tl.at.get(range.start).copied().unwrap_or(t.scored_from);
    let hours: Vec<f64> = tl.at[range.clone()]
        .iter()
        .map(|a| (*a - start).as_seconds_f64() / 3600.0)
        .collect();
    let x_max = hours.last().copied().unwrap_or(1.0).max(1e-3);
    let demand = &tl.demand[range.clone()];
    let y_max = demand
        .iter()
        .copied()
        .chain(
            tl.policies
                .iter()
                .flat_map(|p| p.1[range.clone()].iter().copied()),
        )
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let r_max = tl
        .policies
        .iter()
        .flat_map(|p| p.2[range.clone()].iter().copied())
        .max()
        .unwrap_or(1)
        + 1;
    let (top, bottom) = root.split_vertically(520);
    let x_desc = if whole {
        "hours into the scored part".to_string()
    } else {
        format!(
            "hours from {} (the busiest day of the scored part)",
            start.format("%Y-%m-%d %H:%M")
        )
    };
    let title = match (span, whole) {
        (Span::Full, _) | (_, true) => format!("{}: demand against ready capacity", t.trace),
        _ => format!("{}: demand against ready capacity, busiest day", t.trace),
    };

    let mut chart = hours_chart(&top, (title, 24), (x_max, y_max), &x_desc, "CPU, cores").map_err(e)?;
    for (name, capacity, _) in &tl.policies {
        let points = hours
            .iter()
            .copied()
            .zip(capacity[range.clone()].iter().copied())
            .collect();
        policy_line(&mut chart, name, points, format!("{name} ready capacity")).map_err(e)?;
    }
    chart
        .draw_series(LineSeries::new(
            hours.iter().copied().zip(demand.iter().copied()),
            BLACK.stroke_width(2),
        ))
        .map_err(e)?
        .label("demand")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(2)));
    legend(&mut chart, SeriesLabelPosition::UpperLeft).map_err(e)?;

    let mut chart = ChartBuilder::on(&bottom)
        .caption("replicas (starting pods included)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0u32..r_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc.as_str())
        .y_desc("replicas")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (name, _, replicas) in &tl.policies {
        let points = hours
            .iter()
            .copied()
            .zip(replicas[range.clone()].iter().copied())
            .collect();
        policy_line(&mut chart, name, points, name.clone()).map_err(e)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft).map_err(e)?;
    root.present().map_err(e)
}

/// The served model's forecast of each step against what then happened,
/// over the busiest day of the scored part.
pub fn forecast(t: &TraceResult, path: &Path) -> Result<(), Error> {
    render(
        path,
        (1400, 600),
        |a| draw_forecast(t, a),
        |a| draw_forecast(t, a),
    )
}

fn draw_forecast<DB: DrawingBackend>(t: &TraceResult, root: DrawingArea<DB, Shift>) -> Drawn {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let f = &t.forecast;
    let range = busiest(&f.at, &f.actual, TimeDelta::days(1));
    let start = f.at.get(range.start).copied().unwrap_or(t.scored_from);
    let hours: Vec<f64> = f.at[range.clone()]
        .iter()
        .map(|a| (*a - start).as_seconds_f64() / 3600.0)
        .collect();
    let x_max = hours.last().copied().unwrap_or(1.0).max(1e-3);
    let y_max = [&f.actual, &f.forecast, &f.upper]
        .iter()
        .flat_map(|v| v[range.clone()].iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.1, f64::max)
        * 1.1;
    let ahead = f.steps_ahead * t.step_seconds as usize;
    let caption = format!(
        "{}: the {} model's forecast {ahead} s ahead against what happened",
        t.trace, t.accuracy.model
    );
    let x_desc = format!("hours from {}", start.format("%Y-%m-%d %H:%M"));
    let mut chart =
        hours_chart(&root, (caption, 22), (x_max, y_max), &x_desc, "CPU demand, cores").map_err(e)?;
    let series = |v: &[f64]| -> Vec<(f64, f64)> {
        hours
            .iter()
            .copied()
            .zip(v[range.clone()].iter().copied())
            .filter(|p| p.1.is_finite())
            .collect()
    };
    let blue = colour("predictive");
    let upper = series(&f.upper);
    if !upper.is_empty() {
        chart
            .draw_series(DashedLineSeries::new(upper, 5, 4, blue.mix(0.6).stroke_width(1)))
            .map_err(e)?
            .label("upper quantile")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], blue.mix(0.6).stroke_width(1)));
    }
    chart
        .draw_series(LineSeries::new(series(&f.forecast), blue.stroke_width(2)))
        .map_err(e)?
        .label(format!("forecast made {ahead} s before"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], blue.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(series(&f.actual), BLACK.stroke_width(2)))
        .map_err(e)?
        .label("what happened")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(2)));
    legend(&mut chart, SeriesLabelPosition::UpperLeft).map_err(e)?;
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

/// Each policy's curve of violation against cost over the targets, summed
/// over the traces, with the HPA's reference point and the lines through it.
pub fn pareto(r: &Report, path: &Path) -> Result<(), Error> {
    render(path, (900, 640), |a| draw_pareto(r, a), |a| draw_pareto(r, a))
}

fn draw_pareto<DB: DrawingBackend>(r: &Report, root: DrawingArea<DB, Shift>) -> Drawn {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let c = &r.curves;
    let all = c.policies.iter().flat_map(|p| &p.points);
    let (x_lo, x_hi, y_hi) = all.fold((f64::MAX, 0.0f64, 0.0f64), |(lo, hi, y), p| {
        (
            lo.min(p.replica_hours),
            hi.max(p.replica_hours),
            y.max(p.violation_hours),
        )
    });
    if x_lo > x_hi {
        return root.present().map_err(e);
    }
    let pad = (x_hi - x_lo).max(1.0) * 0.06;
    let y_hi = y_hi.max(0.01) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{} trace(s): violation against cost over targets {} % (lower left is better)",
                r.traces.len(),
                r.setup
                    .targets
                    .iter()
                    .map(|t| format!("{t:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ("sans-serif", 18),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d((x_lo - pad)..(x_hi + pad), 0.0..y_hi)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("replica-hours (sum over traces)")
        .y_desc("SLO violation, hours (sum over traces)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    if let Some((cost, violation)) = c.hpa {
        let grey = RGBColor(150, 150, 150);
        for line in [
            vec![(cost, 0.0), (cost, y_hi)],
            vec![(x_lo - pad, violation), (x_hi + pad, violation)],
        ] {
            chart
                .draw_series(DashedLineSeries::new(line, 4, 4, grey.stroke_width(1)))
                .map_err(e)?;
        }
        chart
            .draw_series(std::iter::once(Circle::new(
                (cost, violation),
                11,
                colour("hpa").stroke_width(2),
            )))
            .map_err(e)?;
    }
    for p in &c.policies {
        let points: Vec<(f64, f64)> = p
            .points
            .iter()
            .map(|q| (q.replica_hours, q.violation_hours))
            .collect();
        policy_line(&mut chart, &p.policy, points.clone(), p.policy.clone()).map_err(e)?;
        let col = colour(&p.policy);
        chart
            .draw_series(p.points.iter().map(|q| {
                EmptyElement::at((q.replica_hours, q.violation_hours))
                    + Circle::new((0, 0), 4, col.filled())
                    + Text::new(
                        format!("{:.0}", q.target),
                        (5, 3),
                        ("sans-serif", 11).into_font().color(&col),
                    )
            }))
            .map_err(e)?;
    }
    // Upper right: dear and violating, where no good curve goes.
    legend(&mut chart, SeriesLabelPosition::UpperRight).map_err(e)?;
    root.present().map_err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_day_is_the_window_with_the_most_demand() {
        let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        // Three days hourly; day two carries the load.
        let at: Vec<_> = (0..72).map(|h| start + TimeDelta::hours(h)).collect();
        let demand: Vec<f64> = (0..72)
            .map(|h| if (24..48).contains(&h) { 5.0 } else { 1.0 })
            .collect();
        assert_eq!(busiest(&at, &demand, TimeDelta::days(1)), 24..48);
        // A span not much longer than a day is shown whole.
        assert_eq!(busiest(&at[..30], &demand[..30], TimeDelta::days(1)), 0..30);
        assert_eq!(busiest(&[], &[], TimeDelta::days(1)), 0..0);
    }
}
