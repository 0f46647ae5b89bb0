//! `Retry-After`, as OpenMeter or a gateway in front of it sends it.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// `Retry-After` in either of its forms (RFC 9110 §10.2.3): delay seconds,
/// or an HTTP-date, read as the wait from now (a date already past is no
/// wait). Rate-limiting gateways in front of OpenMeter send both.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers.get(RETRY_AFTER)?.to_str().ok()?, chrono::Utc::now())
}

fn retry_after_at(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (date.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    #[test]
    fn retry_after_reads_delay_seconds() {
        let now = Utc::now();
        assert_eq!(retry_after_at(" 7 ", now), Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_reads_an_http_date_as_the_wait_from_now() {
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 8, 49, 30).unwrap();
        let wait = retry_after_at("Sat, 05 Dec 2026 08:49:37 GMT", now);
        assert_eq!(wait, Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_a_date_already_past_is_no_wait() {
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 9, 0, 0).unwrap();
        let wait = retry_after_at("Sat, 05 Dec 2026 08:49:37 GMT", now);
        assert_eq!(wait, Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_that_is_neither_form_is_ignored() {
        assert_eq!(retry_after_at("soon", Utc::now()), None);
    }
}
