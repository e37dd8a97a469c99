//! Writes to InfluxDB 2 with the `influxdb2` client, and says whether a
//! failed write can succeed later.

use std::ops::Range;
use std::time::Duration;

use influxdb2::RequestError;
use influxdb2::models::DataPoint;

use crate::config::InfluxConfig;

/// Why a write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// InfluxDB refused the points themselves (400, 413, 422): the same
    /// points will never be written.
    #[error("InfluxDB rejected the points: {0}")]
    Rejected(String),
    /// InfluxDB was not reached, did not answer in time, was overloaded or
    /// failing (429, 5xx), or refused the token, organisation or bucket
    /// (401, 403, 404): the same write can succeed later.
    #[error("InfluxDB is unavailable: {0}")]
    Unavailable(String),
}

/// An InfluxDB 2 bucket to write to.
#[derive(Debug)]
pub struct Influx {
    client: influxdb2::Client,
    bucket: String,
    timeout: Duration,
}

impl Influx {
    /// A client for `config`; each write gives up after `timeout`.
    pub fn new(config: &InfluxConfig, timeout: Duration) -> Influx {
        Influx {
            client: influxdb2::Client::new(
                config.url.trim_end_matches('/'),
                &config.org,
                config.token.expose(),
            ),
            bucket: config.bucket.clone(),
            timeout,
        }
    }

    /// Writes `points` in one request.
    pub async fn write(&self, points: Vec<DataPoint>) -> Result<(), WriteError> {
        let write = self.client.write(&self.bucket, futures::stream::iter(points));
        match tokio::time::timeout(self.timeout, write).await {
            Err(_) => Err(WriteError::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(classify(error)),
        }
    }
}

fn classify(error: RequestError) -> WriteError {
    match error {
        RequestError::Http { status, text } => {
            let text = text.trim();
            match status.as_u16() {
                400 | 413 | 422 => WriteError::Rejected(format!("{status}: {text}")),
                401 | 403 | 404 => WriteError::Unavailable(format!(
                    "{status}: {text} (check influx.token, influx.org and influx.bucket)"
                )),
                _ => WriteError::Unavailable(format!("{status}: {text}")),
            }
        }
        // Connection refused, reset, TLS: the server may come back.
        other => WriteError::Unavailable(other.to_string()),
    }
}

/// Why [`place`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The write of these units was rejected.
    Rejected(String),
    /// The recorder is shutting down: nothing more is written.
    Stopped,
}

/// Writes units `0..n` (a unit is one message's points) with `write`, which
/// retries whatever is only unavailable. A rejected write is split in halves
/// until each rejected unit is alone, so one bad message never holds back
/// the others. Returns, per unit, the reason InfluxDB rejected it, or `None`
/// when it is written.
pub async fn place<W, Fut>(n: usize, mut write: W) -> Result<Vec<Option<String>>, Attempt>
where
    W: FnMut(Range<usize>) -> Fut,
    Fut: Future<Output = Result<(), Attempt>>,
{
    let mut verdicts = vec![None; n];
    let mut todo = Vec::new();
    todo.push(0..n);
    while let Some(range) = todo.pop() {
        if range.is_empty() {
            continue;
        }
        match write(range.clone()).await {
            Ok(()) => {}
            Err(Attempt::Stopped) => return Err(Attempt::Stopped),
            Err(Attempt::Rejected(reason)) if range.len() == 1 => verdicts[range.start] = Some(reason),
            Err(Attempt::Rejected(_)) => {
                let mid = range.start + range.len() / 2;
                todo.push(mid..range.end);
                todo.push(range.start..mid);
            }
        }
    }
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `place` is an algorithm over any writer: here a closure that rejects
    /// every write holding a unit in `bad`, as InfluxDB rejects a batch with
    /// one bad line. The real server is in the integration tests.
    #[tokio::test]
    async fn rejected_units_are_isolated_and_the_rest_written() {
        let bad = [3usize, 4, 9];
        let mut written = Vec::new();
        let mut calls = 0;
        let verdicts = place(10, |range| {
            calls += 1;
            let rejected = range.clone().any(|i| bad.contains(&i));
            if !rejected {
                written.extend(range.clone());
            }
            async move {
                if rejected {
                    Err(Attempt::Rejected(format!("bad line in {range:?}")))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
        written.sort();
        assert_eq!(written, vec![0, 1, 2, 5, 6, 7, 8]);
        for (i, v) in verdicts.iter().enumerate() {
            assert_eq!(v.is_some(), bad.contains(&i), "unit {i}: {v:?}");
        }
        assert_eq!(verdicts[9].as_deref(), Some("bad line in 9..10"));
        assert!(calls < 20, "{calls} writes for 10 units");

        // All good: one write.
        let mut calls = 0;
        let verdicts = place(10, |_| {
            calls += 1;
            async { Ok(()) }
        })
        .await
        .unwrap();
        assert_eq!((calls, verdicts.iter().all(Option::is_none)), (1, true));

        // Stopping stops.
        let stopped = place(4, |_| async { Err(Attempt::Stopped) }).await;
        assert_eq!(stopped, Err(Attempt::Stopped));
    }

    #[tokio::test]
    async fn the_token_shows_nowhere() {
        // Port 9 on loopback: nothing listens, the write fails at once.
        let config = InfluxConfig {
            url: "http://127.0.0.1:9".into(),
            token: pas_runtime::Secret::new("hunter2-token"),
            ..InfluxConfig::default()
        };
        let influx = Influx::new(&config, Duration::from_secs(5));
        assert!(!format!("{influx:?}").contains("hunter2"), "{influx:?}");
        let error = influx.write(Vec::new()).await.unwrap_err();
        assert!(matches!(error, WriteError::Unavailable(_)), "{error}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn statuses_say_whether_to_retry() {
        let http = |code: u16| RequestError::Http {
            status: code.try_into().unwrap(),
            text: "partial write: field type conflict".into(),
        };
        for code in [400, 413, 422] {
            assert!(matches!(classify(http(code)), WriteError::Rejected(_)), "{code}");
        }
        for code in [401, 403, 404, 429, 500, 503] {
            assert!(
                matches!(classify(http(code)), WriteError::Unavailable(_)),
                "{code}"
            );
        }
        let WriteError::Rejected(reason) = classify(http(422)) else {
            unreachable!()
        };
        assert!(reason.contains("field type conflict"), "{reason}");
    }
}
