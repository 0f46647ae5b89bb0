//! Ingest request bodies: each event serialised once, straight into its
//! request, a batch past `BATCH_MAX_BYTES` in parts.

use bytes::{BufMut, Bytes, BytesMut};

use super::Pending;

/// Events sent in one ingest request, and its body.
pub(super) struct Part {
    pub(super) events: Vec<Pending>,
    pub(super) body: Bytes,
}

/// Ingest request bodies, `[e1,e2,…]`, each event serialised straight into
/// its body: a body is closed before the event that would take it past
/// `max_bytes` (an event alone in its body may exceed it; OpenMeter then
/// decides).
pub(super) fn batch_bodies(ready: Vec<Pending>, max_bytes: usize) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut part = Vec::with_capacity(ready.len());
    let mut body = BytesMut::with_capacity(max_bytes.min(ready.len() * 1024) + 2);
    body.put_u8(b'[');
    for pending in ready {
        let mark = body.len();
        if !part.is_empty() {
            body.put_u8(b',');
        }
        pending.event.write_json(&mut body);
        if body.len() + 1 > max_bytes && !part.is_empty() {
            let event = body.split_off(mark);
            body.put_u8(b']');
            parts.push(Part {
                events: std::mem::take(&mut part),
                body: body.split().freeze(),
            });
            body.put_u8(b'[');
            body.extend_from_slice(event.get(1..).unwrap_or_default());
        }
        part.push(pending);
    }
    if !part.is_empty() {
        body.put_u8(b']');
        parts.push(Part {
            events: part,
            body: body.freeze(),
        });
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::{batch_bodies, Pending};
    use crate::commit::Position;
    use crate::contract::Contract;
    use crate::decode::{decode, Decoded};
    use crate::map::map;
    use crate::source::{Origin, Record};

    fn pending(i: usize) -> Pending {
        let payload = format!(
            r#"{{"id":"env-{i}","type":"create_signed_ticket","data":{{"request_id":"r{i}","auth_id":"app:u{i}","computed_fee":"10","current_time":"2026-09-09T00:00:00Z"}}}}"#
        );
        let contract = Contract::default();
        let Ok(Decoded::Ticket(ticket)) = decode(payload.as_bytes(), 1 << 20, &contract) else {
            panic!("a billable sample");
        };
        let mapped = map(*ticket, &"3500".parse().unwrap(), &contract);
        let record = Record {
            payload: payload.into(),
            key: None,
            headers: Vec::new(),
            origin: Origin {
                source: "test".into(),
                position: Position {
                    partition: 0,
                    offset: i as i64,
                },
            },
        };
        Pending {
            record,
            identity: mapped.identity,
            event: Box::new(mapped.event),
            time: mapped.signed_at,
        }
    }

    fn ids(body: &[u8]) -> Vec<String> {
        let events: Vec<serde_json::Value> = serde_json::from_slice(body).expect("a JSON array");
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_batch_within_the_byte_limit_is_one_request_of_every_event() {
        let bodies = batch_bodies((0..5).map(pending).collect(), 1 << 20);
        assert_eq!(bodies.len(), 1);
        assert_eq!(ids(&bodies[0].body).len(), 5);
    }

    #[test]
    fn a_batch_past_the_byte_limit_is_split_into_requests_within_it_in_order() {
        let one = batch_bodies(vec![pending(0)], 1 << 20)[0].body.len();
        let limit = one * 2 + 2;
        let bodies = batch_bodies((0..5).map(pending).collect(), limit);
        let sizes: Vec<usize> = bodies.iter().map(|p| p.events.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let mut sent = Vec::new();
        for part in &bodies {
            assert!(part.body.len() <= limit, "{} > {limit}", part.body.len());
            let body_ids = ids(&part.body);
            let event_ids: Vec<String> = part.events.iter().map(|p| p.event.id.clone()).collect();
            assert_eq!(body_ids, event_ids, "a body carries exactly its events");
            sent.extend(body_ids);
        }
        let all: Vec<String> = (0..5).map(|i| pending(i).event.id.clone()).collect();
        assert_eq!(sent, all);
    }

    #[test]
    fn an_event_larger_than_the_byte_limit_is_sent_alone() {
        let bodies = batch_bodies((0..3).map(pending).collect(), 10);
        assert_eq!(bodies.len(), 3);
        assert!(bodies.iter().all(|p| ids(&p.body).len() == 1));
    }
}
