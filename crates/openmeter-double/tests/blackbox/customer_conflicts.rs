//! Which customer creates the server refuses, with its words, and how the
//! owner of a subject is found instead.

use crate::support::spec::{json_of, problem};
use crate::support::start;

fn detail(p: &serde_json::Value) -> &str {
    p["detail"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_key_that_is_another_customers_subject_key_is_409_naming_the_owner() {
    let env = start().await;
    let owner = env.double.seed_customer("legacy-42", &["acme:bob"]);

    let p = problem(env.create_customer("acme:bob", &["acme:bob"]).await, 409).await;

    assert_eq!(
        detail(&p),
        format!("key acme:bob overlaps with subject of another customer: {owner}")
    );
    assert_eq!(env.double.customers().len(), 1);
}

#[tokio::test]
async fn a_taken_key_is_409_already_used() {
    let env = start().await;
    env.create_customer("acme", &[]).await;

    let p = problem(env.create_customer("acme", &[]).await, 409).await;

    assert_eq!(
        detail(&p),
        "key \"acme\" is already used by an another customer in the namespace default"
    );
}

#[tokio::test]
async fn recreating_a_customer_whose_key_is_its_subject_reads_as_a_subject_overlap() {
    let env = start().await;
    env.create_customer("acme", &["acme"]).await;

    let p = problem(env.create_customer("acme", &["acme"]).await, 409).await;

    assert!(
        detail(&p).starts_with("key acme overlaps with subject of another customer: "),
        "{p}"
    );
}

#[tokio::test]
async fn subject_keys_attributed_to_someone_else_are_409() {
    let env = start().await;
    env.create_customer("a", &["shared"]).await;

    let p = problem(env.create_customer("b", &["mine", "shared"]).await, 409).await;

    assert_eq!(
        detail(&p),
        "one or multiple subject keys of [mine, shared] are already associated with an \
         different customer in the namespace default"
    );
}

#[tokio::test]
async fn a_key_that_is_another_customers_id_is_409() {
    let env = start().await;
    let id = env.double.seed_customer("acme", &[]);

    let p = problem(env.create_customer(&id, &[]).await, 409).await;

    assert_eq!(
        detail(&p),
        format!("key {id} overlaps with id of another customer")
    );
}

#[tokio::test]
async fn the_owner_of_a_subject_is_found_by_its_usage_attribution_subject_key() {
    let env = start().await;
    let owner = env
        .double
        .seed_customer("legacy-42", &["acme:bob", "acme:bob-2"]);
    env.double.seed_customer("other", &["other"]);

    let (_, list) = json_of(
        env.get("/openmeter/customers?filter[usage_attribution_subject_key][eq]=acme:bob")
            .await,
        "CustomerPagePaginatedResponse",
    )
    .await;

    assert_eq!(list["meta"]["page"]["total"], 1);
    assert_eq!(list["data"][0]["id"], owner.as_str());
    let (_, none) = json_of(
        env.get("/openmeter/customers?filter[key][eq]=acme:bob")
            .await,
        "CustomerPagePaginatedResponse",
    )
    .await;
    assert_eq!(none["meta"]["page"]["total"], 0);
}
