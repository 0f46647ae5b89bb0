//! One signing call's place in its session's chain, read from the fields
//! go-livepeer's remote signer writes (`server/remote_signer.go`,
//! `GenerateLivePayment`): `session_id` is `state.StateID`,
//! `sequence_number` is `state.SequenceNumber` (0 for a new session, +1 per
//! successful call), `previous_time` is the previous call's `current_time`
//! (`state.LastUpdate`, to the nanosecond; equal to `current_time` on the
//! first call). Decode builds it for every ticket; `chain` keeps the
//! chains. It names nothing else of the crate.

use std::hash::Hasher;

use rustc_hash::FxHasher;

/// Which chain a call belongs to. `StateID` is 4 random bytes in hex
/// (`core.RandomManifestID`), so about one pair in 2^32 collides across a
/// fleet: the orchestrator address, which a state cannot change (the
/// signer refuses a mismatch), tells such sessions apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionKey(pub(crate) u64);

impl SessionKey {
    /// FxHash (the same key for the same session within a process): this
    /// runs once per event, where SipHash cost 0.15 µs.
    fn of(session_id: &str, orch_address: &str) -> Self {
        let mut hasher = FxHasher::default();
        hasher.write(session_id.as_bytes());
        hasher.write_u8(0xff);
        let mut lower = [0u8; 64];
        let orch = orch_address.as_bytes();
        match lower.get_mut(..orch.len()) {
            Some(buf) => {
                buf.copy_from_slice(orch);
                buf.make_ascii_lowercase();
                hasher.write(buf);
            }
            None => hasher.write(orch_address.to_ascii_lowercase().as_bytes()),
        }
        Self(hasher.finish())
    }
}

/// One call of a session: its number, the time it covers back to, its own
/// time, and its fee (for the session's rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub(crate) session: SessionKey,
    pub(crate) seq: u32,
    /// `previous_time`, ns since the epoch.
    pub(crate) previous_ns: i64,
    /// `current_time`, ns since the epoch.
    pub(crate) current_ns: i64,
    /// `computed_fee`; `None` when it could not be read (a dead letter).
    pub(crate) fee_wei: Option<u128>,
}

/// The fields a link is read from, as text: the ids trimmed,
/// `sequence_number` as its digits, `previous_time` as written.
#[derive(Debug, Default)]
pub(crate) struct Fields<'a> {
    pub(crate) session_id: Option<&'a str>,
    pub(crate) orch_address: Option<&'a str>,
    pub(crate) sequence_number: Option<&'a str>,
    /// `current_time`, already read (decode parsed it as the signed time).
    pub(crate) current_ns: Option<i64>,
    pub(crate) previous_time: Option<&'a str>,
}

impl Link {
    /// The link the fields describe; `None` when the event carries no chain
    /// (an older signer, another producer) or one that contradicts
    /// go-livepeer's rules (a later call not after its previous one).
    pub(crate) fn read(fields: Fields, fee_wei: Option<u128>) -> Option<Self> {
        let session_id = fields.session_id.filter(|s| !s.is_empty())?;
        let orch = fields.orch_address.unwrap_or_default();
        let seq: u32 = fields.sequence_number?.trim().parse().ok()?;
        let current_ns = fields.current_ns?;
        let previous_ns = if seq == 0 {
            current_ns
        } else {
            nanos(fields.previous_time?)?
        };
        if seq > 0 && previous_ns >= current_ns {
            return None;
        }
        Some(Self {
            session: SessionKey::of(session_id, orch),
            seq,
            previous_ns,
            current_ns,
            fee_wei,
        })
    }

    /// The first call of a session (`session_status` "new").
    pub(crate) fn is_root(&self) -> bool {
        self.seq == 0
    }
}

/// An RFC 3339 time to the nanosecond, as Go's `time.Time` writes it.
pub(crate) fn nanos(text: &str) -> Option<i64> {
    let text = text.trim();
    utc_nanos(text).or_else(|| crate::encoding::parse_rfc3339(text)?.timestamp_nanos_opt())
}

/// The form Go writes a UTC `time.Time` in, `YYYY-MM-DDTHH:MM:SS[.f…]Z`
/// with 1 to 9 fraction digits, read without chrono (it runs for every
/// event); `None` for any other form, which chrono then reads.
fn utc_nanos(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let (date, rest) = (b.get(..19)?, b.get(19..)?);
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        date.get(range)?.iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| date[i] != c) {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let fraction = match rest {
        [b'.', f @ .., b'Z'] if (1..=9).contains(&f.len()) => f,
        [b'Z'] => &[][..],
        _ => return None,
    };
    let mut ns = 0i64;
    for &c in fraction {
        if !c.is_ascii_digit() {
            return None;
        }
        ns = ns * 10 + i64::from(c - b'0');
    }
    ns *= 10i64.pow(9 - fraction.len() as u32);
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    seconds.checked_mul(1_000_000_000)?.checked_add(ns)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn fields<'a>(seq: &'a str, current: &'a str, previous: &'a str) -> Fields<'a> {
        Fields {
            session_id: Some("a1b2c3d4"),
            orch_address: Some("0xAB"),
            sequence_number: Some(seq),
            current_ns: nanos(current),
            previous_time: Some(previous),
        }
    }

    #[test]
    fn a_continuing_call_links_to_its_previous_time_to_the_nanosecond() {
        let link = Link::read(
            fields(
                "3",
                "2026-09-09T00:00:10.000000002Z",
                "2026-09-09T00:00:00.000000001Z",
            ),
            Some(7),
        )
        .unwrap();
        assert_eq!(link.seq, 3);
        assert_eq!(link.current_ns - link.previous_ns, 10_000_000_001);
        assert_eq!(link.fee_wei, Some(7));
    }

    #[test]
    fn a_new_session_is_a_root_whatever_its_previous_time() {
        let link = Link::read(fields("0", "2026-09-09T00:00:00Z", "garbage"), None).unwrap();
        assert!(link.is_root());
        assert_eq!(link.previous_ns, link.current_ns);
    }

    #[test]
    fn no_chain_without_a_session_a_number_or_exact_times() {
        let mut f = fields("1", "2026-09-09T00:00:10Z", "2026-09-09T00:00:00Z");
        f.session_id = None;
        assert_eq!(Link::read(f, None), None);
        let f = fields("x", "2026-09-09T00:00:10Z", "2026-09-09T00:00:00Z");
        assert_eq!(Link::read(f, None), None);
        let f = fields("1", "2026-09-09T00:00:10Z", "1788912000000");
        assert_eq!(Link::read(f, None), None, "milliseconds cannot be matched");
        let f = fields("1", "2026-09-09T00:00:00Z", "2026-09-09T00:00:10Z");
        assert_eq!(
            Link::read(f, None),
            None,
            "a later call before its previous one"
        );
    }

    #[test]
    fn the_same_state_id_under_another_orchestrator_is_another_session() {
        let a = Link::read(fields("0", "2026-09-09T00:00:00Z", ""), None).unwrap();
        let mut other = fields("0", "2026-09-09T00:00:00Z", "");
        other.orch_address = Some("0xcd");
        let b = Link::read(other, None).unwrap();
        assert_ne!(a.session, b.session);
        let mut same = fields("0", "2026-09-09T00:00:00Z", "");
        same.orch_address = Some("0xab");
        assert_eq!(Link::read(same, None).unwrap().session, a.session);
    }

    #[test]
    fn go_times_are_read_as_chrono_reads_them() {
        for text in [
            "2026-09-09T00:00:00Z",
            "2026-09-09T00:00:00.1Z",
            "2026-09-09T23:59:59.999999999Z",
            "2024-02-29T12:34:56.000000001Z",
            "1970-01-01T00:00:00Z",
            "2100-12-31T01:02:03.45Z",
        ] {
            let chrono = DateTime::parse_from_rfc3339(text)
                .unwrap()
                .timestamp_nanos_opt();
            assert_eq!(utc_nanos(text), chrono, "{text}");
        }
        for other in [
            "2026-09-09T00:00:00+02:00",
            "2026-09-09t00:00:00z",
            "2026-02-29T00:00:00Z",
            "2026-09-09T00:00:00.Z",
            "2026-09-09T00:00:00.1234567890Z",
            "2026-09-09T24:00:00Z",
        ] {
            assert_eq!(utc_nanos(other), None, "{other}");
        }
        assert_eq!(
            nanos("2026-09-09T02:00:00+02:00"),
            nanos("2026-09-09T00:00:00Z"),
            "other forms are read by chrono"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_go_utc_time_reads_as_chrono_reads_it(
            secs in 0i64..8_000_000_000,
            nanos_part in 0u32..1_000_000_000,
        ) {
            let at = DateTime::from_timestamp(secs, nanos_part).unwrap();
            let text = at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            proptest::prop_assert_eq!(utc_nanos(&text), at.timestamp_nanos_opt());
        }
    }
}
