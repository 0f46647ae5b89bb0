//! Guards the test suite's own spec validator against vacuous passes.

use serde_json::json;

use crate::support::spec::assert_matches_spec;

fn customer() -> serde_json::Value {
    json!({
        "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "name": "n", "key": "k",
        "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z",
    })
}

#[test]
fn validator_accepts_a_minimal_customer() {
    assert_matches_spec("BillingCustomer", &customer());
}

#[test]
#[should_panic(expected = "violations")]
fn validator_rejects_null_for_a_non_nullable_optional_field() {
    let mut c = customer();
    c["primary_email"] = json!(null);
    assert_matches_spec("BillingCustomer", &c);
}

#[test]
#[should_panic(expected = "violations")]
fn validator_rejects_unknown_fields() {
    let mut c = customer();
    c["colour"] = json!("red");
    assert_matches_spec("BillingCustomer", &c);
}

#[test]
#[should_panic(expected = "violations")]
fn validator_rejects_bad_date_times() {
    let mut c = customer();
    c["created_at"] = json!("yesterday");
    assert_matches_spec("BillingCustomer", &c);
}
