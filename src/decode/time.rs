//! When the ticket was signed: the time it claims, else now.

use chrono::{DateTime, SecondsFormat, Utc};

use super::envelope::TicketData;
use super::scalar::Scalar;

/// The time the ticket says it was signed ([`claimed_time`]), else now.
pub(super) fn event_time(
    data: &TicketData,
    current_time: Option<Scalar>,
    envelope_ts: Option<Scalar>,
) -> (String, DateTime<Utc>) {
    claimed_time(
        current_time,
        Scalar::read(data.current_time_unix),
        envelope_ts,
    )
    .unwrap_or_else(|| {
        let now = Utc::now();
        (now.to_rfc3339_opts(SecondsFormat::Millis, true), now)
    })
}

/// When a ticket says it was signed, and that time as text: `current_time`
/// when it is valid RFC 3339 (kept verbatim, nanoseconds and all); else
/// `current_time_unix`; else the envelope's `timestamp` (both positive unix
/// ms). All are stable across redelivery; `None` when none is readable.
pub(crate) fn claimed_time(
    current_time: Option<Scalar>,
    current_time_unix: Option<Scalar>,
    timestamp: Option<Scalar>,
) -> Option<(String, DateTime<Utc>)> {
    if let Some(Scalar::Text(t)) = &current_time {
        let t = t.trim();
        if let Some(at) = crate::encoding::parse_rfc3339(t) {
            return Some((t.to_owned(), at));
        }
    }
    let at = [current_time_unix, timestamp]
        .into_iter()
        .flatten()
        .find_map(|value| unix_millis(&value))?;
    Some((at.to_rfc3339_opts(SecondsFormat::Millis, true), at))
}

fn unix_millis(value: &Scalar) -> Option<DateTime<Utc>> {
    let ms: i64 = match value {
        Scalar::Number(digits) => digits.parse().ok()?,
        Scalar::Text(s) => s.trim().parse().ok()?,
        Scalar::Other => return None,
    };
    (ms > 0)
        .then(|| DateTime::from_timestamp_millis(ms))
        .flatten()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn text(t: &str) -> Option<Scalar<'_>> {
        Some(Scalar::Text(Cow::Borrowed(t)))
    }

    #[test]
    fn a_valid_current_time_is_kept_verbatim() {
        let (time, _) = claimed_time(text(" 2026-09-09T00:00:00.000000001Z "), None, None).unwrap();
        assert_eq!(time, "2026-09-09T00:00:00.000000001Z");
    }

    #[test]
    fn unix_millis_come_before_the_envelope_timestamp() {
        let (time, _) = claimed_time(
            text("yesterday"),
            Some(Scalar::Number("1788912000123")),
            Some(Scalar::Number("1")),
        )
        .unwrap();
        assert_eq!(time, "2026-09-09T00:00:00.123Z");
    }

    #[test]
    fn no_positive_time_is_no_claim() {
        let zero = Some(Scalar::Number("0"));
        assert_eq!(claimed_time(None, zero.clone(), zero), None);
    }
}
