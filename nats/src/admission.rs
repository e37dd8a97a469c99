use std::time::Duration;

use chrono::{DateTime, Utc};
use pas_schemas::{DecodeError, Message, ValidationError};
use serde::{Deserialize, Serialize};

/// Which message times a stage admits, judged against the time the stream
/// stored the message (the NATS server's clock), so a backlog read late is
/// never refused for having waited. A message outside goes to the stage's
/// dead-letter subject with the reason. The `[admission]` section of every
/// stage's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admission {
    /// A message dated more than this after it was stored is refused: a node
    /// whose clock runs ahead would make its workload's newest step lie in the
    /// future and every true sample after it late.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// A message dated more than this before it was stored is refused (a
    /// clock reset to 1970). Live subjects only: a replay publishes a trace's
    /// old times on purpose.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_clock_skew: Duration::from_secs(30),
            max_age: Duration::from_secs(3600),
        }
    }
}

impl Admission {
    /// Decodes and validates a payload stored at `stored_at_unix_nanos`, then
    /// checks its time: what every stage does with a message at its door.
    pub fn decode<M: Message>(
        &self,
        payload: &[u8],
        stored_at_unix_nanos: i128,
        replay: bool,
    ) -> Result<M, DecodeError> {
        let msg = pas_schemas::decode::<M>(payload)?;
        self.check(&msg, stored_at_unix_nanos, replay)
            .map_err(DecodeError::Invalid)?;
        Ok(msg)
    }

    /// Checks `msg`, stored at `stored_at_unix_nanos`; without the age bound
    /// for a replay run's subjects.
    pub fn check<M: Message>(
        &self,
        msg: &M,
        stored_at_unix_nanos: i128,
        replay: bool,
    ) -> Result<(), ValidationError> {
        let stored = DateTime::<Utc>::from_timestamp_nanos(i64::try_from(stored_at_unix_nanos).unwrap_or(
            if stored_at_unix_nanos < 0 {
                i64::MIN
            } else {
                i64::MAX
            },
        ));
        let max_age = (!replay).then_some(self.max_age);
        pas_schemas::check_admission(msg.timestamp(), stored, self.max_clock_skew, max_age)
    }
}
