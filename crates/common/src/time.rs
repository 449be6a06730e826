//! Time as stored (microseconds since the Unix epoch, an `i64` that every
//! database and the sqlx Any driver handle) and as sent (`google.protobuf.Timestamp`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Converts stored microseconds to a protobuf timestamp.
pub fn timestamp_from_micros(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// Converts whole seconds since the epoch (as in JWT claims) to a timestamp.
pub fn timestamp_from_secs(secs: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_trip_including_before_the_epoch() {
        let ts = timestamp_from_micros(1_700_000_000_123_456);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_000));
        let ts = timestamp_from_micros(-1);
        assert_eq!((ts.seconds, ts.nanos), (-1, 999_999_000));
    }
}
