//! go-livepeer's remote signer, as far as its events go
//! (`server/remote_signer.go`, `GenerateLivePayment`, master 176aa415c): a
//! call without a state blob opens a session (`StateID`, number 0,
//! `previous_time` = `current_time`, status "new"); a call with a blob
//! signs number + 1 with `previous_time` = the blob's `LastUpdate` (the
//! previous call's `current_time`, to the nanosecond) and returns a new
//! blob. A client may call again with an old blob (a retry) or twice with
//! one blob: the number repeats, the chain branches. Times are written as
//! Go's `time.Time` marshals them (RFC 3339 with the fraction's trailing
//! zeros trimmed).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::json;

/// The signed state a client holds between calls.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    state_id: String,
    auth_id: String,
    seq: u64,
    last_update: DateTime<Utc>,
}

/// One signing call's event, as published.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) seq: u64,
    pub(crate) payload: String,
}

/// A signer whose clock moves on by `step` per call.
pub(crate) struct Signer {
    clock: DateTime<Utc>,
    step: Duration,
    calls: usize,
}

/// Wei per millisecond of billed time.
const RATE: i64 = 1_000_000_000;

impl Signer {
    pub(crate) fn new(start: DateTime<Utc>, step: Duration) -> Self {
        Self {
            clock: start,
            step,
            calls: 0,
        }
    }

    /// A call without a blob: a new session.
    pub(crate) fn open(&mut self, state_id: &str, auth_id: &str) -> (Blob, Call) {
        let now = self.tick();
        let blob = Blob {
            state_id: state_id.to_owned(),
            auth_id: auth_id.to_owned(),
            seq: 0,
            last_update: now,
        };
        let call = self.event(&blob, now, None);
        (blob, call)
    }

    /// A call with `blob`, the latest or an old one.
    pub(crate) fn call(&mut self, blob: &Blob) -> (Blob, Call) {
        self.call_with_fee(blob, None)
    }

    /// A call whose `computed_fee` is `fee` as written (a bad one is
    /// dead-lettered, yet the call reached Kafka).
    pub(crate) fn call_with_fee(&mut self, blob: &Blob, fee: Option<&str>) -> (Blob, Call) {
        let now = self.tick();
        let next = Blob {
            seq: blob.seq + 1,
            last_update: now,
            ..blob.clone()
        };
        let call = self.event(&next, blob.last_update, fee);
        (next, call)
    }

    fn tick(&mut self) -> DateTime<Utc> {
        self.clock += self.step;
        self.clock
    }

    /// The event of the call that produced `state`, its previous call at
    /// `previous` (itself for a new session).
    fn event(&mut self, state: &Blob, previous: DateTime<Utc>, fee: Option<&str>) -> Call {
        self.calls += 1;
        let now = state.last_update;
        let billed_ms = if state.seq == 0 {
            10_000
        } else {
            (now - previous).num_milliseconds()
        };
        let fee = fee.map_or_else(|| (billed_ms * RATE).to_string(), str::to_owned);
        let request_id = format!("{:08x}", self.calls);
        let payload = json!({
            "id": format!("{}-{}-{request_id}", state.state_id, state.seq),
            "type": "create_signed_ticket",
            "timestamp": now.timestamp_millis().to_string(),
            "gateway": "",
            "data": {
                "session_id": state.state_id,
                "session_status": if state.seq == 0 { "new" } else { "continuing" },
                "app": "",
                "pipeline": "live",
                "request_id": request_id,
                "orch_address": "0xabababababababababababababababababababab",
                "orch_url": "https://orch.example:8935",
                "manifest_id": format!("manifest_{}", state.state_id),
                "pm_session_id": "pm_1",
                "current_time": go_time(now),
                "current_time_unix": now.timestamp_millis(),
                "previous_time": go_time(previous),
                "previous_time_unix": previous.timestamp_millis(),
                "billable_secs": billed_ms as f64 / 1000.0,
                "pixels": 0,
                "session_balance": "100",
                "computed_fee": fee,
                "cost": "1.0000000000",
                "sequence_number": state.seq,
                "num_tickets": 1,
                "auth_id": state.auth_id,
            }
        })
        .to_string();
        Call {
            seq: state.seq,
            payload,
        }
    }
}

/// RFC 3339 as Go's `time.Time` marshals it: nanoseconds, trailing zeros
/// of the fraction trimmed.
fn go_time(t: DateTime<Utc>) -> String {
    let full = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
    let (fraction_start, z) = (full.find('.').unwrap_or(full.len() - 1), full.len() - 1);
    let fraction = full[fraction_start..z]
        .trim_end_matches('0')
        .trim_end_matches('.');
    format!("{}{fraction}Z", &full[..fraction_start])
}
