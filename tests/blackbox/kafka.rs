//! The collector over a real Kafka-protocol broker (tansu) on loopback:
//! `e2e` the paths every event takes, `faults` what once stopped billing in
//! silence.

use serde_json::json;

mod e2e;
mod faults;

/// A billable ticket, `i` its envelope and request id, for customer
/// `client-<customer>:user-<customer>`.
fn ticket(i: usize, customer: usize) -> String {
    json!({"id": format!("env-{i}"), "type": "create_signed_ticket", "timestamp": "1788912000000", "gateway": "",
           "data": {"request_id": format!("req-{i}"), "auth_id": format!("client-{customer}:user-{customer}"),
                    "computed_fee": "1000000000000", "current_time": "2026-09-09T00:00:00Z", "pipeline": "live"}})
    .to_string()
}
