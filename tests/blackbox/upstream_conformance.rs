//! Conformance with today's upstream collector: the Benthos unit tests of
//! livepeer/clearinghouse, `openmeter-collector/collector_benthos_test.yaml`
//! at commit b604893 (the companion of its `collector.yaml`), each case's
//! input and `json_contains` expectation copied unchanged, run through
//! `ticketmeter replay --dry-run` at the same ETH/USD price (3000).
//!
//! Where upstream drops an event (`output_batches: []`), ticketmeter never
//! sends it either: an empty owner id is dead-lettered with its reason (a
//! ticket is never lost in silence), another event type is skipped.

use serde_json::{json, Value};

use crate::support;
use crate::support::fixtures::assert_subset;

/// `replay --dry-run` over `inputs` at ETH/USD 3000, one printed line each.
fn dry_run(inputs: &[Value]) -> Vec<Value> {
    use std::io::Write;
    let mut child = std::process::Command::new(support::binary::binary_path())
        .args(["replay", "--dry-run", "-"])
        .env_clear()
        .env("ETH_USD_PRICE", "3000")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for input in inputs {
        writeln!(stdin, "{input}").unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn m2m_compound_auth_id_keeps_compound_subject_and_customer_key() {
    let input = json!({
        "type": "create_signed_ticket",
        "data": {
            "auth_id": "demo-client:demo-user",
            "computed_fee": "1000000000000000",
            "request_id": "req-m2m-1",
            "pipeline": "live-video-to-video",
            "model_id": "daydream-video",
            "pixels": "1000",
            "billable_secs": 1.5,
            "manifest_id": "mid-1",
            "current_time": "2026-07-24T12:00:00Z"
        }
    });
    let expected = json!({
        "subject": "demo-client:demo-user",
        "type": "create_signed_ticket",
        "id": "req-m2m-1",
        "data": {
            "client_id": "demo-client",
            "usage_subject": "demo-user",
            "usage_subject_type": "external_user_id",
            "external_user_id": "demo-user",
            "auth_id": "demo-client:demo-user",
            "openmeter_customer_key": "demo-client:demo-user",
            "network_fee_usd_micros": 3000000,
            "billable_usd_micros": 3000000,
            "fee_wei": 1000000000000000u64,
            "billable_secs": 1.5,
            "manifest_id": "mid-1",
            "pipeline": "live-video-to-video",
            "eth_usd_price": 3000
        }
    });
    let printed = dry_run(&[input]);
    assert_subset(&expected, &printed[0], "event");
}

#[test]
fn owner_wire_subject_strips_to_bare_cloudevent_subject_and_customer_key() {
    let input = json!({
        "type": "create_signed_ticket",
        "data": {
            "auth_id": "app_abc:owner:2e51154b-d296-4015-990c-02d5f16ecf1e",
            "computed_fee": "1000000000000000",
            "request_id": "req-owner-1",
            "billable_secs": 2,
            "session_id": "state-xyz",
            "current_time": "2026-07-24T12:00:00Z"
        }
    });
    let expected = json!({
        "subject": "2e51154b-d296-4015-990c-02d5f16ecf1e",
        "data": {
            "client_id": "app_abc",
            "usage_subject": "2e51154b-d296-4015-990c-02d5f16ecf1e",
            "usage_subject_type": "app_owner",
            "external_user_id": "2e51154b-d296-4015-990c-02d5f16ecf1e",
            "auth_id": "app_abc:owner:2e51154b-d296-4015-990c-02d5f16ecf1e",
            "openmeter_customer_key": "2e51154b-d296-4015-990c-02d5f16ecf1e",
            "network_fee_usd_micros": 3000000,
            "fee_wei": 1000000000000000u64,
            "billable_secs": 2,
            "manifest_id": "state-xyz",
            "eth_usd_price": 3000
        }
    });
    let printed = dry_run(&[input]);
    assert_subset(&expected, &printed[0], "event");
}

#[test]
fn owner_bare_id_is_trimmed_and_upstream_usage_subject_type_preserved_for_m2m() {
    let inputs = [
        json!({
            "type": "create_signed_ticket",
            "data": {
                "auth_id": "app_abc:owner: 2e51154b-d296-4015-990c-02d5f16ecf1e ",
                "computed_fee": "1000000000000000",
                "request_id": "req-owner-trim",
                "current_time": "2026-07-24T12:00:00Z"
            }
        }),
        json!({
            "type": "create_signed_ticket",
            "data": {
                "auth_id": "demo-client:demo-user",
                "usage_subject_type": "oidc_user",
                "computed_fee": "1000000000000000",
                "request_id": "req-oidc-1",
                "current_time": "2026-07-24T12:00:00Z"
            }
        }),
    ];
    let expected = [
        json!({
            "subject": "2e51154b-d296-4015-990c-02d5f16ecf1e",
            "data": {
                "usage_subject_type": "app_owner",
                "openmeter_customer_key": "2e51154b-d296-4015-990c-02d5f16ecf1e"
            }
        }),
        json!({
            "subject": "demo-client:demo-user",
            "data": { "usage_subject_type": "oidc_user" }
        }),
    ];
    let printed = dry_run(&inputs);
    for (expected, actual) in expected.iter().zip(&printed) {
        assert_subset(expected, actual, "event");
    }
}

#[test]
fn empty_owner_bare_id_is_never_sent_and_is_dead_lettered_with_its_reason() {
    let input = json!({
        "type": "create_signed_ticket",
        "data": {
            "auth_id": "app_x:owner:",
            "computed_fee": "1",
            "request_id": "req-empty-owner",
            "current_time": "2026-07-24T12:00:00Z"
        }
    });
    let printed = dry_run(&[input]);
    assert_eq!(
        printed,
        [json!({"dead_letter": "identity: empty owner id"})]
    );
}

#[test]
fn exact_fractional_fee_micros_with_no_per_ticket_ceil() {
    let input = json!({
        "type": "create_signed_ticket",
        "data": {
            "auth_id": "demo-client:demo-user",
            "computed_fee": "1",
            "request_id": "req-frac-1",
            "current_time": "2026-07-24T12:00:00Z"
        }
    });
    let expected = json!({
        "data": {
            "network_fee_usd_micros": 0.000000003,
            "billable_usd_micros": 0.000000003,
            "fee_wei": 1
        }
    });
    let printed = dry_run(&[input]);
    assert_subset(&expected, &printed[0], "event");
    assert_eq!(
        printed[0]["data"]["network_fee_usd_micros"].to_string(),
        "0.000000003",
        "written with its exact digits"
    );
}

#[test]
fn non_create_signed_ticket_events_are_dropped_before_mapping() {
    let input = json!({ "type": "other_event", "data": { "auth_id": "demo-client:demo-user" } });
    let printed = dry_run(&[input]);
    assert_eq!(
        printed,
        [json!({"skip": "not a create_signed_ticket event"})]
    );
}
