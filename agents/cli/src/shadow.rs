//! `pas shadow report`: what PAS would have run beside each workload it
//! shadows (an HPA scales it, or `pas.io/mode: shadow`), against what ran,
//! from the scorecards the scaler keeps in KV `pas-scaler`
//! (`pas_scaler::shadow`).

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use pas_nats::NatsConfig;
use pas_scaler::shadow::{self, Shadow, Totals};
use pas_schemas::subjects::Prefix;
use serde::Serialize;

/// `pas shadow` commands.
#[derive(Debug, clap::Subcommand)]
pub enum ShadowCommand {
    /// Print each shadowed workload's scorecard: replica-hours PAS would
    /// have used against those that ran, and the time demand exceeded the
    /// ready capacity (ready pods × CPU request) of each.
    Report(ReportArgs),
}

/// `pas shadow report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Only this workload, as namespace/name.
    #[arg(long)]
    workload: Option<String>,
    /// The hours that end within this long before now (the scaler keeps
    /// `shadow_window`, 7 days by default).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    since: Duration,
    /// Read a replay run's scaler (replay.<RUN>.) instead of the live one.
    #[arg(long)]
    run: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One workload's line of the report.
#[derive(Debug, Serialize)]
struct Row {
    namespace: String,
    workload: String,
    hpa: Option<String>,
    /// The scaler's last evaluation of it.
    last_evaluated: Option<DateTime<Utc>>,
    /// Hours scored.
    hours: f64,
    pas_replica_hours: f64,
    actual_replica_hours: f64,
    pas_violation_seconds: f64,
    actual_violation_seconds: f64,
    pas_unserved_core_seconds: f64,
    actual_unserved_core_seconds: f64,
    demand_core_seconds: f64,
    /// PAS's replica-hours over those that ran.
    cost_ratio: Option<f64>,
    /// PAS's violation time over that of what ran.
    violation_ratio: Option<f64>,
}

impl Row {
    fn new(shadow: &Shadow, t: &Totals) -> Row {
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        Row {
            namespace: shadow.namespace.clone(),
            workload: shadow.workload.clone(),
            hpa: shadow.hpa.clone(),
            last_evaluated: shadow.last,
            hours: t.seconds / 3600.0,
            pas_replica_hours: t.pas_replica_hours(),
            actual_replica_hours: t.actual_replica_hours(),
            pas_violation_seconds: t.pas_violation_seconds,
            actual_violation_seconds: t.actual_violation_seconds,
            pas_unserved_core_seconds: t.pas_unserved_core_seconds,
            actual_unserved_core_seconds: t.actual_unserved_core_seconds,
            demand_core_seconds: t.demand_core_seconds,
            cost_ratio: ratio(t.pas_replica_seconds, t.actual_replica_seconds),
            violation_ratio: ratio(t.pas_violation_seconds, t.actual_violation_seconds),
        }
    }
}

/// Runs `pas shadow …`.
pub async fn run(command: ShadowCommand, nats: &NatsConfig) -> anyhow::Result<()> {
    let ShadowCommand::Report(args) = command;
    let only = match &args.workload {
        Some(w) => Some(
            w.split_once('/')
                .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
                .with_context(|| format!("--workload {w:?}: expected namespace/name"))?,
        ),
        None => None,
    };
    let prefix = Prefix::for_run(args.run.as_deref()).map_err(anyhow::Error::msg)?;
    let since = TimeDelta::from_std(args.since)
        .ok()
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .context("--since reaches before any history")?;
    let conn = pas_nats::connect(nats, "pas-cli", false).await?;
    let shadows = shadow::read(&conn.jetstream, &prefix.keys(), only)
        .await
        .map_err(anyhow::Error::msg)?;
    if let Some((namespace, name)) = only
        && shadows.is_empty()
    {
        anyhow::bail!(
            "PAS has no shadow of {namespace}/{name}{}: is it annotated pas.io/enabled: \"true\", and does an HPA target it (or pas.io/mode: shadow)?",
            args.run
                .as_deref()
                .map(|r| format!(" in run {r}"))
                .unwrap_or_default()
        );
    }
    let rows: Vec<Row> = shadows.iter().map(|s| Row::new(s, &s.since(since))).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "No workload is shadowed{}. PAS shadows a workload annotated pas.io/enabled: \"true\" that an HPA targets, or one annotated pas.io/mode: shadow.",
            args.run
                .as_deref()
                .map(|r| format!(" in run {r}"))
                .unwrap_or_default()
        );
        return Ok(());
    }
    print!("{}", table(&rows, args.since));
    Ok(())
}

fn table(rows: &[Row], since: Duration) -> String {
    let ratio = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.2}"));
    let time = |s: f64| humantime::format_duration(Duration::from_secs(s.round() as u64)).to_string();
    let mut out = format!(
        "Shadow scorecards over the hours ending in the last {} (capacity = ready pods × CPU request):\n",
        humantime::format_duration(since)
    );
    out.push_str(&format!(
        "{:<32} {:<20} {:>8} {:>12} {:>12} {:>6} {:>14} {:>14} {:>6}\n",
        "workload",
        "hpa",
        "scored",
        "PAS repl-h",
        "ran repl-h",
        "cost",
        "PAS violation",
        "ran violation",
        "viol."
    ));
    for r in rows {
        out.push_str(&format!(
            "{:<32} {:<20} {:>7.1}h {:>12.2} {:>12.2} {:>6} {:>14} {:>14} {:>6}\n",
            format!("{}/{}", r.namespace, r.workload),
            r.hpa.as_deref().unwrap_or("-"),
            r.hours,
            r.pas_replica_hours,
            r.actual_replica_hours,
            ratio(r.cost_ratio),
            time(r.pas_violation_seconds),
            time(r.actual_violation_seconds),
            ratio(r.violation_ratio),
        ));
    }
    out.push_str(
        "cost: PAS's replica-hours over those that ran; viol.: PAS's violation time over that of what ran (below 1 is better).\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_and_its_table_line() {
        let mut s = Shadow {
            namespace: "shop".into(),
            workload: "web".into(),
            hpa: Some("web-hpa".into()),
            ..Shadow::default()
        };
        let t = Totals {
            seconds: 7200.0,
            pas_replica_seconds: 3.0 * 7200.0,
            actual_replica_seconds: 4.0 * 7200.0,
            pas_violation_seconds: 30.0,
            actual_violation_seconds: 120.0,
            ..Totals::default()
        };
        s.hours.insert(0, t);
        let row = Row::new(&s, &t);
        assert_eq!(
            (row.hours, row.pas_replica_hours, row.actual_replica_hours),
            (2.0, 6.0, 8.0)
        );
        assert_eq!((row.cost_ratio, row.violation_ratio), (Some(0.75), Some(0.25)));
        let text = table(&[row], Duration::from_secs(7 * 86_400));
        let line = text.lines().nth(2).unwrap();
        for cell in [
            "shop/web", "web-hpa", "2.0h", "6.00", "8.00", "0.75", "30s", "2m", "0.25",
        ] {
            assert!(line.contains(cell), "{cell} not in {line:?}");
        }
        // No violation that ran: no ratio, not a division by zero.
        let calm = Row::new(&s, &Totals::default());
        assert_eq!((calm.cost_ratio, calm.violation_ratio), (None, None));
    }
}
