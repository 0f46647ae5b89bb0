//! The CloudEvent written as JSON straight into a request body, byte for
//! byte what its `Serialize` writes through serde_json (a test holds that
//! over every fixture event and over text JSON must escape), in less time:
//! the field names are copied as they are, and a value is copied whole
//! unless it holds a byte JSON escapes, which serde_json then writes. It
//! cannot fail, so no event is ever dead-lettered for its serialisation.
//! Serialising was about a quarter of decode + map + serialise, half of it
//! serde_json escaping byte by byte (BENCHMARKS.md, "Hot path, part 5").

use std::io::Write as _;

use bytes::BufMut;

use super::{Figure, UsageData, UsageEvent};

impl UsageEvent {
    /// Appends the event to `out` as JSON, as `serde_json::to_writer`
    /// would: what `deliver` puts in a request body.
    pub fn write_json<B: BufMut>(&self, out: &mut B) {
        write_event(out, self);
    }
}

fn write_event<B: BufMut>(out: &mut B, event: &UsageEvent) {
    out.put_slice(b"{\"specversion\":");
    text(out, event.specversion);
    out.put_slice(b",\"id\":");
    text(out, &event.id);
    out.put_slice(b",\"source\":");
    text(out, event.source);
    out.put_slice(b",\"type\":");
    text(out, event.kind);
    out.put_slice(b",\"subject\":");
    text(out, event.subject());
    out.put_slice(b",\"time\":");
    text(out, &event.time);
    out.put_slice(b",\"data\":");
    write_data(out, &event.data);
    out.put_u8(b'}');
}

/// `data` in the order and with the omissions of `UsageData`'s `Serialize`.
fn write_data<B: BufMut>(out: &mut B, data: &UsageData) {
    let (id, dims) = (&data.identity, &data.dimensions);
    let subject = id.billing_key().as_str();
    let given = data.given_usage_subject_type.as_deref();
    field(out, b"{\"client_id\":", id.client_id());
    field(out, b",\"external_user_id\":", id.external_user_id());
    field(out, b",\"usage_subject\":", id.usage_subject());
    field(
        out,
        b",\"usage_subject_type\":",
        id.usage_subject_type(given),
    );
    field(out, b",\"billing_subject_key\":", subject);
    field(out, b",\"billing_subject_kind\":", id.kind().as_str());
    field(out, b",\"actor_end_user_id\":", id.actor_end_user_id());
    field(out, b",\"openmeter_customer_key\":", subject);
    out.put_slice(b",\"network_fee_usd_micros\":");
    display(out, &data.network_fee_usd_micros);
    out.put_slice(b",\"billable_usd_micros\":");
    display(out, &data.billable_usd_micros);
    field(out, b",\"pipeline\":", dims.pipeline());
    field(out, b",\"model_id\":", dims.model_id());
    field(out, b",\"manifest_id\":", dims.manifest_id());
    field(out, b",\"app\":", dims.app());
    field(out, b",\"session_status\":", dims.session_status());
    field(out, b",\"orch_address\":", dims.orch_address());
    number(out, b",\"pixels\":", dims.pixels());
    number(out, b",\"num_tickets\":", dims.num_tickets());
    number(out, b",\"billable_secs\":", dims.billable_secs());
    out.put_slice(b",\"fee_wei\":");
    figure(out, &data.fee_wei);
    field(out, b",\"gateway_request_id\":", &data.gateway_request_id);
    field(out, b",\"auth_id\":", id.auth_id().as_str());
    out.put_slice(b",\"eth_usd_price\":");
    figure(out, &data.eth_usd_price);
    if let Some(signed_at) = &data.signed_at {
        field(out, b",\"signed_at\":", signed_at);
    }
    if let Some(original_id) = &data.original_id {
        field(out, b",\"original_id\":", original_id);
    }
    out.put_slice(b",\"id_fingerprint\":");
    display(out, &data.id_fingerprint);
    out.put_u8(b'}');
}

fn field<B: BufMut>(out: &mut B, name: &[u8], value: &str) {
    out.put_slice(name);
    text(out, value);
}

/// A JSON string: copied between quotes when no byte needs escaping (a
/// quote, a backslash, a control character: all serde_json escapes), else
/// written by serde_json.
fn text<B: BufMut>(out: &mut B, value: &str) {
    // Without an early exit, so the check runs over whole vectors.
    let plain = value.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.put_u8(b'"');
        out.put_slice(value.as_bytes());
        out.put_u8(b'"');
    } else {
        // Writing into a `BufMut` cannot fail, nor can serialising a `str`.
        let _ = serde_json::to_writer((&mut *out).writer(), value);
    }
}

/// A number given as its exact JSON digits.
fn number<B: BufMut>(out: &mut B, name: &[u8], digits: Option<&str>) {
    if let Some(digits) = digits {
        out.put_slice(name);
        out.put_slice(digits.as_bytes());
    }
}

fn figure<B: BufMut>(out: &mut B, value: &Figure) {
    match value {
        Figure::Wei(fee) => display(out, fee),
        Figure::Price(price) => display(out, price),
        Figure::Text(t) => text(out, t),
    }
}

/// A value whose `Display` is its JSON number (an amount's exact digits, a
/// fingerprint).
fn display<B: BufMut>(out: &mut B, value: &impl std::fmt::Display) {
    // Writing into a `BufMut` cannot fail.
    let _ = write!((&mut *out).writer(), "{value}");
}

#[cfg(test)]
mod tests {
    use crate::contract::Contract;
    use crate::decode::{decode, Decoded, DEFAULT_MAX_BYTES};
    use crate::map::{map, UsageEvent};

    fn event(data: &str, contract: &Contract) -> UsageEvent {
        let payload = format!(r#"{{"id":"env\"1","type":"create_signed_ticket","data":{data}}}"#);
        let Ok(Decoded::Ticket(ticket)) = decode(payload.as_bytes(), DEFAULT_MAX_BYTES, contract)
        else {
            panic!("{payload} is a ticket");
        };
        map(*ticket, &"3500.25".parse().unwrap(), contract).event
    }

    fn written(event: &UsageEvent) -> String {
        let mut out = Vec::new();
        event.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn serialised(event: &UsageEvent) -> String {
        serde_json::to_string(event).unwrap()
    }

    #[test]
    fn an_event_is_written_as_serde_json_writes_it() {
        let e = event(
            r#"{"request_id":"r1","auth_id":"app:owner:U1","computed_fee":"333333333333","current_time":"2026-09-09T00:00:00Z","pixels":7,"num_tickets":"2","billable_secs":1.50,"pipeline":"p","app":"a"}"#,
            &Contract::default(),
        );
        assert_eq!(written(&e), serialised(&e));
    }

    #[test]
    fn text_json_escapes_is_escaped_as_serde_json_escapes_it() {
        let e = event(
            r#"{"request_id":"r\\1","auth_id":"c:u é","computed_fee":"10","pipeline":"tab\there\n\u0001\u007f","model_id":"\u2028","app":"\"q\""}"#,
            &Contract::default(),
        );
        assert!(written(&e).contains(r#"\n\u0001"#), "{}", written(&e));
        assert_eq!(written(&e), serialised(&e));
    }

    #[test]
    fn the_seeds_text_figures_and_a_moved_time_are_written_as_serde_json_writes_them() {
        let mut e = event(
            r#"{"request_id":"r1","auth_id":"c:u","computed_fee":"000120","current_time":"2026-09-09T00:00:00Z"}"#,
            &Contract::seed(),
        );
        e.bill_from("2026-09-10T00:00:00Z".parse().unwrap());
        e.data.original_id = Some("first".to_owned());
        assert_eq!(written(&e), serialised(&e));
    }

    #[test]
    fn every_fixture_ticket_is_written_as_serde_json_writes_it() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures");
        let mut tickets = 0;
        for file in std::fs::read_dir(dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let Ok(case) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let payload = case
                    .get("event")
                    .map_or_else(|| line.to_owned(), ToString::to_string);
                for contract in [Contract::default(), Contract::seed()] {
                    let decoded = decode(payload.as_bytes(), DEFAULT_MAX_BYTES, &contract);
                    if let Ok(Decoded::Ticket(ticket)) = decoded {
                        let e = map(*ticket, &"3500.25".parse().unwrap(), &contract).event;
                        assert_eq!(written(&e), serialised(&e), "{}", path.display());
                        tickets += 1;
                    }
                }
            }
        }
        assert!(tickets > 20, "only {tickets} fixture tickets");
    }
}
