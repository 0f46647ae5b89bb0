//! The price oracle: fetched before start, refreshed, last good value kept.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use ticketmeter::{PriceFeed, PriceSource};
use tokio_util::sync::CancellationToken;

/// An oracle answering `answers[n]` to its n-th call (then the last one).
async fn oracle(answers: Vec<(u16, &'static str)>) -> (String, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let app = Router::new().route(
        "/spot",
        get(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) as usize;
            let (status, body) = answers[n.min(answers.len() - 1)];
            async move { (StatusCode::from_u16(status).unwrap(), body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/spot", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

/// A feed on an oracle answering `answers`, refreshed every 50 ms.
async fn feed(answers: Vec<(u16, &'static str)>) -> (PriceFeed, Arc<AtomicU32>) {
    let (url, calls) = oracle(answers).await;
    let source = PriceSource::Oracle {
        url,
        refresh: Duration::from_millis(50),
    };
    let feed = PriceFeed::start(source, CancellationToken::new())
        .await
        .unwrap();
    (feed, calls)
}

#[tokio::test]
async fn oracle_price_is_fetched_before_start_and_last_good_value_kept_on_failure() {
    let (feed, calls) = feed(vec![
        (200, r#"{"data":{"amount":"3500.25","currency":"USD"}}"#),
        (500, "oops"),
    ])
    .await;
    assert_eq!(feed.current().price.to_string(), "3500.25");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(calls.load(Ordering::SeqCst) >= 3, "refreshed");
    assert_eq!(feed.current().price.to_string(), "3500.25");
}

#[tokio::test]
async fn oracle_refresh_replaces_the_price() {
    let (feed, _) = feed(vec![
        (200, r#"{"price": 3000}"#),
        (200, r#"{"ethereum": {"usd": 3100.5}}"#),
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(feed.current().price.to_string(), "3100.5");
}

#[tokio::test]
async fn start_fails_clearly_when_the_oracle_has_no_price() {
    let (url, _) = oracle(vec![(200, r#"{"nothing": true}"#)]).await;
    let source = PriceSource::Oracle {
        url: url.clone(),
        refresh: Duration::from_secs(60),
    };
    let e = PriceFeed::start(source, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(&url) && e.to_string().contains("no price"),
        "{e}"
    );
}
