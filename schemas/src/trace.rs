//! The trace file format of `shared/data/traces`: CSV with the header
//! `timestamp,cpu`, one row per sample in time order, RFC 3339 UTC times,
//! CPU utilisation in percent. `pas replay` and `pas record` read and write
//! it; the models read it for training and backtests.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

/// The header line.
pub const HEADER: &str = "timestamp,cpu";

/// Parses trace text: the header, then `timestamp,cpu` rows, each time after
/// the one before, each value a finite number. Errors name the line.
pub fn parse(text: &str) -> Result<Vec<(DateTime<Utc>, f64)>, String> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == HEADER => {}
        Some((_, header)) => {
            return Err(format!(
                "line 1: expected the header `{HEADER}`, found `{header}`"
            ));
        }
        None => return Err("the file is empty".into()),
    }
    let mut points: Vec<(DateTime<Utc>, f64)> = Vec::new();
    for (n, line) in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (at, cpu) = line
            .split_once(',')
            .ok_or_else(|| format!("line {}: expected `{HEADER}`", n + 1))?;
        let at = DateTime::parse_from_rfc3339(at)
            .map_err(|e| format!("line {}: bad timestamp `{at}`: {e}", n + 1))?
            .with_timezone(&Utc);
        let cpu: f64 = cpu
            .parse()
            .map_err(|_| format!("line {}: bad number `{cpu}`", n + 1))?;
        if !cpu.is_finite() {
            return Err(format!("line {}: `{cpu}` is not a finite number", n + 1));
        }
        if let Some(&(previous, _)) = points.last()
            && at <= previous
        {
            return Err(format!("line {}: {at} is not after the previous row", n + 1));
        }
        points.push((at, cpu));
    }
    if points.is_empty() {
        return Err("the file has no rows".into());
    }
    Ok(points)
}

/// Writes points in the format: second precision with a `Z`, at most 6 decimals.
pub fn to_csv(points: &[(DateTime<Utc>, f64)]) -> String {
    let mut out = String::with_capacity(32 * (points.len() + 1));
    out.push_str(HEADER);
    out.push('\n');
    for (at, cpu) in points {
        let value = format!("{cpu:.6}");
        let value = value.trim_end_matches('0').trim_end_matches('.');
        let _ = writeln!(out, "{},{value}", at.to_rfc3339_opts(SecondsFormat::Secs, true));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_traces_parse_back() {
        let text = "timestamp,cpu\n2014-02-14T14:30:00Z,12.5\n2014-02-14T14:35:00Z,0.066\n2014-02-14T14:40:00Z,100\n";
        let points = parse(text).unwrap();
        assert_eq!(points.len(), 3);
        assert_eq!(to_csv(&points), text);
    }

    #[test]
    fn bad_rows_are_named() {
        assert!(parse("time,cpu\n").unwrap_err().contains("line 1"));
        let e = parse("timestamp,cpu\n2014-02-14T14:30:00Z,1\n2014-02-14T14:30:00Z,2\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("not after"), "{e}");
        assert!(
            parse("timestamp,cpu\nyesterday,1\n")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(
            parse("timestamp,cpu\n2014-02-14T14:30:00Z,NaN\n")
                .unwrap_err()
                .contains("finite")
        );
    }
}
