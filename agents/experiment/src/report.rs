//! The report: `report.md`, `results.json` and the plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::pareto::{self, Curves};
use crate::{Config, Error, TraceResult};

/// What the experiment ran with, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// Policies compared.
    pub policies: Vec<String>,
    /// A trace's 100 % is this many pods' worth of CPU.
    pub reference_pods: u32,
    /// Pod start-up, seconds (the middle of the range).
    pub startup_seconds: f64,
    /// Each pod's start-up is `startup × (1 ± spread)`.
    pub startup_spread: f64,
    /// Targets every policy ran at, percent.
    pub targets: Vec<f64>,
    /// Pod capacity (CPU limit), millicores.
    pub capacity_millicores: f64,
    /// Pod request, millicores.
    pub request_millicores: f64,
    /// Target utilisation, percent.
    pub target_utilization: f64,
    /// Replica bounds.
    pub min_replicas: u32,
    /// Replica bounds.
    pub max_replicas: u32,
    /// Scaler tick, seconds.
    pub tick_seconds: f64,
    /// Share of each trace trained on.
    pub train_fraction: f64,
    /// How demand moves between points.
    pub shape: crate::Shape,
    /// The HPA's sync period, seconds.
    pub hpa_sync_seconds: f64,
    /// The risk `predictive` plans with: on the forecast's (1 − risk) quantile.
    pub risk: f64,
}

/// One policy over all traces.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The policy.
    pub policy: String,
    /// Traces it ran on.
    pub traces: usize,
    /// Mean over traces of the SLO-violation time, hours.
    pub mean_violation_hours: f64,
    /// Mean over traces of the replica-hours.
    pub mean_replica_hours: f64,
    /// Sum of violation time over sum of the HPA's (1 = the same as the HPA).
    pub violation_vs_hpa: Option<f64>,
    /// Mean over traces of replica-hours over the HPA's.
    pub cost_vs_hpa: Option<f64>,
    /// Mean over traces of replica-hours over the oracle's.
    pub cost_vs_oracle: Option<f64>,
    /// Mean scaling actions per trace.
    pub mean_scaling_actions: f64,
    /// 1 − used / ready core-seconds over every trace.
    pub slack: Option<f64>,
}

/// Everything an experiment produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Settings.
    pub setup: Setup,
    /// Per policy over every trace, the oracle last.
    pub summary: Vec<Summary>,
    /// Each policy's cost against violation summed over the traces, by
    /// target, and how it compares with the HPA at the reference target.
    pub curves: Curves,
    /// Per trace.
    pub traces: Vec<TraceResult>,
    /// Total training wall time, seconds.
    pub training_seconds: f64,
    /// Total simulation wall time, seconds.
    pub simulation_seconds: f64,
}

impl Report {
    /// Summarises the traces' results.
    pub fn new(config: &Config, traces: Vec<TraceResult>) -> Report {
        let setup = Setup {
            policies: config.policies.iter().map(|p| p.as_str().to_owned()).collect(),
            reference_pods: config.reference_pods,
            startup_seconds: config.pod.startup.as_secs_f64(),
            startup_spread: config.pod.startup_spread,
            targets: config.targets(),
            capacity_millicores: config.pod.capacity_millicores,
            request_millicores: config.pod.request_millicores,
            target_utilization: config.settings.target_utilization,
            min_replicas: config.settings.min_replicas,
            max_replicas: config.settings.max_replicas,
            tick_seconds: config.tuning.tick.as_secs_f64(),
            train_fraction: config.train_fraction,
            shape: config.shape,
            hpa_sync_seconds: config.hpa_sync.as_secs_f64(),
            risk: config.settings.risk,
        };
        let names: Vec<String> = traces
            .first()
            .map(|t| t.scores.iter().map(|s| s.policy.clone()).collect())
            .unwrap_or_default();
        let summary = names.iter().map(|name| summarise(name, &traces)).collect();
        let curves = Curves::new(
            &pareto::sum(traces.iter().flat_map(|t| pareto::points(&t.sweep))),
            config.settings.target_utilization,
        );
        Report {
            setup,
            summary,
            curves,
            training_seconds: traces.iter().map(|t| t.training_seconds).sum(),
            simulation_seconds: traces.iter().map(|t| t.simulation_seconds).sum(),
            traces,
        }
    }

    /// The summary of one policy.
    pub fn policy(&self, name: &str) -> Option<&Summary> {
        self.summary.iter().find(|s| s.policy == name)
    }
}

fn summarise(name: &str, traces: &[TraceResult]) -> Summary {
    let score = |t: &TraceResult, p: &str| t.scores.iter().find(|s| s.policy == p).cloned();
    let mine: Vec<_> = traces
        .iter()
        .filter_map(|t| score(t, name).map(|s| (t, s)))
        .collect();
    let n = mine.len().max(1) as f64;
    let ratio_mean = |other: &str| {
        let r: Vec<f64> = mine
            .iter()
            .filter_map(|(t, s)| {
                score(t, other)
                    .filter(|o| o.replica_hours > 0.0)
                    .map(|o| s.replica_hours / o.replica_hours)
            })
            .collect();
        (!r.is_empty()).then(|| r.iter().sum::<f64>() / r.len() as f64)
    };
    let hpa_violation: f64 = mine
        .iter()
        .filter_map(|(t, _)| score(t, "hpa"))
        .map(|s| s.violation_seconds)
        .sum();
    let my_violation: f64 = mine.iter().map(|(_, s)| s.violation_seconds).sum();
    let used: f64 = mine.iter().map(|(_, s)| s.used_core_seconds).sum();
    let ready: f64 = mine.iter().map(|(_, s)| s.ready_core_seconds).sum();
    Summary {
        policy: name.to_owned(),
        traces: mine.len(),
        mean_violation_hours: my_violation / 3600.0 / n,
        mean_replica_hours: mine.iter().map(|(_, s)| s.replica_hours).sum::<f64>() / n,
        violation_vs_hpa: (hpa_violation > 0.0).then(|| my_violation / hpa_violation),
        cost_vs_hpa: ratio_mean("hpa"),
        cost_vs_oracle: ratio_mean("oracle"),
        mean_scaling_actions: mine
            .iter()
            .map(|(_, s)| f64::from(s.scaling_actions))
            .sum::<f64>()
            / n,
        slack: (ready > 0.0).then(|| 1.0 - used / ready),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

/// A ratio as a whole percent ("66 %"), or "–".
fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "–".into(), |r| format!("{:.0} %", r * 100.0))
}

/// Writes `report.md`, `results.json`, and per trace (PNG and SVG each)
/// `<trace>` (its busiest day), `<trace>.full` (the whole scored part) and
/// `<trace>.forecast` (the served model's forecast against what happened),
/// plus `summary` and `pareto` (each policy's cost against violation over
/// the targets), into `dir`.
/// Returns the files written.
pub fn write_report(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut written = Vec::new();
    for t in &report.traces {
        for ext in ["png", "svg"] {
            let path = dir.join(format!("{}.{ext}", t.trace));
            crate::plot::timeline(t, crate::plot::Span::BusiestDay, &path)?;
            written.push(path);
            let path = dir.join(format!("{}.full.{ext}", t.trace));
            crate::plot::timeline(t, crate::plot::Span::Full, &path)?;
            written.push(path);
            let path = dir.join(format!("{}.forecast.{ext}", t.trace));
            crate::plot::forecast(t, &path)?;
            written.push(path);
        }
    }
    for ext in ["png", "svg"] {
        let path = dir.join(format!("summary.{ext}"));
        crate::plot::summary(report, &path)?;
        written.push(path);
        let path = dir.join(format!("pareto.{ext}"));
        crate::plot::pareto(report, &path)?;
        written.push(path);
    }
    let json =
        serde_json::to_string_pretty(report).map_err(|e| Error::Input(format!("results.json: {e}")))?;
    let path = dir.join("results.json");
    std::fs::write(&path, json + "\n").map_err(io(&path))?;
    written.push(path);
    let path = dir.join("report.md");
    std::fs::write(&path, markdown(report)).map_err(io(&path))?;
    written.push(path);
    Ok(written)
}

/// The comparison table over every trace, as the terminal and `report.md` show it.
pub fn summary_table(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| policy | violation h (mean) | vs hpa | replica-h (mean) | cost vs hpa | cost vs oracle | slack | actions (mean) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for p in &report.summary {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {} | {:.1} | {} | {} | {} | {:.0} |",
            p.policy,
            p.mean_violation_hours,
            percent(p.violation_vs_hpa),
            p.mean_replica_hours,
            percent(p.cost_vs_hpa),
            percent(p.cost_vs_oracle),
            percent(p.slack),
            p.mean_scaling_actions,
        );
    }
    s
}

/// Each policy against the HPA at the same cost, along its curve, as the
/// terminal and `report.md` show it.
pub fn curve_table(curves: &Curves) -> String {
    let mut s = String::new();
    let Some((cost, violation)) = curves.hpa else {
        return "No `hpa` run at the reference target to compare with.\n".into();
    };
    let _ = writeln!(
        s,
        "The HPA at {:.0} %: {cost:.1} replica-h, {violation:.2} h of violation.\n",
        curves.reference_target
    );
    let _ = writeln!(
        s,
        "| policy | violation h at the HPA's replica-h | vs hpa | replica-h at the HPA's violation | vs hpa |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for c in &curves.policies {
        let a = &c.against_hpa;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            c.policy,
            opt(a.violation_at_hpa_cost_hours, 2),
            percent(a.violation_vs_hpa),
            opt(a.cost_at_hpa_violation, 1),
            percent(a.cost_vs_hpa),
        );
    }
    s
}

/// Every policy's point at every target.
fn points_table(curves: &Curves) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| policy | target % | replica-h | violation h | slack |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for c in &curves.policies {
        for p in &c.points {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.1} | {:.2} | {} |",
                c.policy,
                p.target,
                p.replica_hours,
                p.violation_hours,
                percent(p.slack())
            );
        }
    }
    s
}

fn markdown(r: &Report) -> String {
    let s0 = &r.setup;
    let mut s = String::new();
    let _ = writeln!(s, "# Experiment report\n");
    let _ = writeln!(
        s,
        "{} trace(s); policies {} and the oracle. A CSV trace's 100 % is {} pods' worth of CPU (a JSON-lines trace of samples is demand as recorded); each pod serves at most {:.0}m, requests {:.0}m and is ready {:.0} s after it is created{}. Target utilisation {:.0} %, replicas {}–{}, scaler tick {:.0} s. Trained on the first {:.0} % of each trace, scored on the rest. Demand is {} between a trace's points. `hpa` evaluates every {:.0} s (the Kubernetes HPA's sync period), PAS's policies every tick; `predictive` plans on the forecast's {:.0}th percentile.\n",
        r.traces.len(),
        s0.policies.join(", "),
        s0.reference_pods,
        s0.capacity_millicores,
        s0.request_millicores,
        s0.startup_seconds,
        if s0.startup_spread > 0.0 {
            format!(" (each pod ± {:.0} %, drawn per pod)", s0.startup_spread * 100.0)
        } else {
            String::new()
        },
        s0.target_utilization,
        s0.min_replicas,
        s0.max_replicas,
        s0.tick_seconds,
        s0.train_fraction * 100.0,
        match s0.shape {
            crate::Shape::Linear => "linear",
            crate::Shape::Step => "held (a step)",
        },
        s0.hpa_sync_seconds,
        (1.0 - s0.risk) * 100.0,
    );
    let _ = writeln!(
        s,
        "Violation: time with demand above the ready pods' capacity. Cost: replica-hours, starting pods included. The oracle knows the future: the replicas the target needs at every tick, each started a start-up time ahead.\n"
    );
    let _ = writeln!(
        s,
        "Training took {:.1} s, the simulations {:.1} s.\n",
        r.training_seconds, r.simulation_seconds
    );
    let _ = writeln!(s, "## All traces\n");
    let _ = writeln!(s, "At the reference target, {:.0} %:\n", s0.target_utilization);
    s.push_str(&summary_table(r));
    let _ = writeln!(s, "\n![summary](summary.svg)\n");
    let _ = writeln!(s, "## Cost against violation\n");
    let _ = writeln!(
        s,
        "Every policy at targets {} %, summed over the traces. Each policy is read along its Pareto frontier, linear between the targets run (an estimate): its violation at the HPA's replica-hours, and the replica-hours it needs for the HPA's violation. A cost above its dearest target is given that target's violation, and a violation above its cheapest target's that target's cost (there, bounds in the HPA's favour); `–` where the curve does not reach. Slack: 1 − used / ready core-seconds.\n",
        s0.targets
            .iter()
            .map(|t| format!("{t:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s.push_str(&curve_table(&r.curves));
    let _ = writeln!(s, "\n![cost against violation](pareto.svg)\n");
    s.push_str(&points_table(&r.curves));
    let _ = writeln!(
        s,
        "\nPer trace, violation at the HPA's replica-hours, % of the HPA's:\n"
    );
    let names: Vec<&str> = r.curves.policies.iter().map(|c| c.policy.as_str()).collect();
    let _ = writeln!(
        s,
        "| trace | hpa replica-h | hpa violation h | {} |",
        names.join(" | ")
    );
    let _ = writeln!(s, "|---|---:|---:|{}", "---:|".repeat(names.len()));
    for t in &r.traces {
        let Some((cost, violation)) = t.curves.hpa else {
            continue;
        };
        let cells: Vec<String> = names
            .iter()
            .map(|n| {
                let a = t.curves.policy(n).map(|c| &c.against_hpa);
                match a {
                    Some(a) if violation > 0.0 => percent(a.violation_vs_hpa),
                    Some(a) => a
                        .violation_at_hpa_cost_hours
                        .map_or_else(|| "–".into(), |v| format!("{v:.2} h")),
                    None => "–".into(),
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "| {} | {cost:.1} | {violation:.2} | {} |",
            t.trace,
            cells.join(" | ")
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "## Forecasts\n");
    let _ = writeln!(
        s,
        "| trace | model | trainer's MASE lstm / naive | forecasts | MASE | naive MASE | upper coverage | coverage of q 0.5 / 0.9 / 0.95 |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|");
    for t in &r.traces {
        let a = &t.accuracy;
        let _ = writeln!(
            s,
            "| {} | {} | {} / {} | {} | {} | {} | {} | {} |",
            t.trace,
            match &a.training_error {
                Some(e) => format!("{} (training failed: {e})", a.model),
                None => a.model.clone(),
            },
            opt(a.validation.get("lstm").copied(), 3),
            opt(a.validation.get("naive").copied(), 3),
            a.forecasts,
            opt(a.mase, 3),
            opt(a.naive_mase, 3),
            opt(a.upper_coverage.map(|c| c * 100.0), 0),
            ["0.5", "0.9", "0.95"]
                .map(|q| opt(a.quantile_coverage.get(q).map(|c| c * 100.0), 0))
                .join(" / "),
        );
    }
    let within: Vec<String> = ["0.5", "0.9", "0.95"]
        .iter()
        .map(|q| {
            let level: f64 = q.parse().unwrap_or(0.0);
            let near = r
                .traces
                .iter()
                .filter(|t| {
                    t.accuracy
                        .quantile_coverage
                        .get(*q)
                        .is_some_and(|c| (c - level).abs() <= 0.05)
                })
                .count();
            format!("{q} on {near}")
        })
        .collect();
    let _ = writeln!(
        s,
        "\nCoverage is the share of actual step demand at or below the forecast's quantile over every step of every forecast (the forecasts of each policy's own run at the reference target are not used: these are the served model's forecasts from the trace's demand). Within 5 points of its level: {} of {} traces.",
        within.join(", "),
        r.traces.len()
    );
    let _ = writeln!(s, "\n## Per trace\n");
    for t in &r.traces {
        let _ = writeln!(
            s,
            "### {}\n\n{} steps of {} s trained on, {} scored ({} → {}); training {:.1} s, simulation {:.1} s.\n",
            t.trace,
            t.train_steps,
            t.step_seconds,
            t.scored_steps,
            t.scored_from,
            t.scored_to,
            t.training_seconds,
            t.simulation_seconds
        );
        let _ = writeln!(
            s,
            "| policy | violation min | violations | mean / max time to capacity s | unserved core-s | replica-h | peak | mean | actions | forecast decisions |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for p in &t.scores {
            let _ = writeln!(
                s,
                "| {} | {:.1} | {} | {} / {} | {:.0} | {:.1} | {} | {:.2} | {} | {} |",
                p.policy,
                p.violation_seconds / 60.0,
                p.violations,
                opt(p.mean_time_to_capacity_seconds, 0),
                opt(p.max_time_to_capacity_seconds, 0),
                p.unserved_core_seconds,
                p.replica_hours,
                p.peak_replicas,
                p.mean_replicas,
                p.scaling_actions,
                p.forecast_decisions,
            );
        }
        let _ = writeln!(
            s,
            "\n![{0}, busiest day]({0}.svg)\n\nThe whole scored part: [{0}.full.svg]({0}.full.svg). \
             What the served model ({1}) forecast for each step {2} s before (the lead time: start-up \
             plus one tick), against what happened:\n\n![{0}, forecast]({0}.forecast.svg)\n",
            t.trace,
            t.accuracy.model,
            t.forecast.steps_ahead * t.step_seconds as usize
        );
    }
    s
}
