//! The ETH/USD price: fixed from `ETH_USD_PRICE`, or polled from an oracle.
//!
//! The oracle is fetched once before the first event is read (start-up fails
//! if it cannot be), then refreshed on an interval; a failed refresh keeps
//! the last good value. Prices are parsed from the JSON text itself, never
//! through a float.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::domain::{EthUsdPrice, PriceError};
use crate::metrics::metrics;

/// Coinbase's ETH-USD spot price, the original's default oracle.
pub(crate) const DEFAULT_ORACLE_URL: &str = "https://api.coinbase.com/v2/prices/ETH-USD/spot";

/// How often the oracle is asked again.
pub(crate) const DEFAULT_ORACLE_REFRESH: Duration = Duration::from_secs(5 * 60);

/// Where the price comes from.
#[derive(Debug, Clone)]
pub enum PriceSource {
    Fixed(EthUsdPrice),
    Oracle { url: String, refresh: Duration },
}

#[derive(Debug, Error)]
pub enum OracleError {
    #[error("price oracle {url} unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("price oracle {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error(
        "price oracle {url} answered a body with no price; expected {{\"price\": n}}, \
         {{\"ethereum\": {{\"usd\": n}}}} or {{\"data\": {{\"amount\": \"n\"}}}}"
    )]
    NoPrice { url: String },
    #[error("price oracle {url}: {source}")]
    BadPrice {
        url: String,
        #[source]
        source: PriceError,
    },
}

/// The price in use, and when it was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricePoint {
    pub price: EthUsdPrice,
    pub obtained: SystemTime,
}

/// A live view of the current price; cheap to clone.
#[derive(Debug, Clone)]
pub struct PriceFeed {
    rx: watch::Receiver<PricePoint>,
    /// An oracle price older than this is stale (three missed refreshes).
    max_age: Option<Duration>,
}

impl PriceFeed {
    /// A feed that never changes (also used by tests and replays).
    pub fn fixed(price: EthUsdPrice) -> Self {
        let (tx, rx) = watch::channel(point(price));
        record(&tx.borrow());
        Self { rx, max_age: None }
    }

    /// Resolves the first price, and for an oracle spawns the refresher,
    /// which stops when `cancel` fires.
    pub async fn start(
        source: PriceSource,
        cancel: CancellationToken,
    ) -> Result<Self, OracleError> {
        let (url, refresh) = match source {
            PriceSource::Fixed(price) => return Ok(Self::fixed(price)),
            PriceSource::Oracle { url, refresh } => (url, refresh),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OracleError::Unreachable {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let first = fetch(&http, &url).await?;
        tracing::info!(%url, price = %first, "ETH/USD price from oracle");
        let (tx, rx) = watch::channel(point(first));
        record(&tx.borrow());
        tokio::spawn(refresh_loop(http, url, refresh, tx, cancel));
        Ok(Self {
            rx,
            max_age: Some(refresh.saturating_mul(3)),
        })
    }

    pub fn current(&self) -> PricePoint {
        *self.rx.borrow()
    }

    /// False once an oracle price has missed three refreshes in a row
    /// (the last good price is still used; `/ready` reports it).
    pub fn is_fresh(&self) -> bool {
        let age = self.current().obtained.elapsed().unwrap_or_default();
        self.max_age.is_none_or(|max| age <= max)
    }
}

fn point(price: EthUsdPrice) -> PricePoint {
    PricePoint {
        price,
        obtained: SystemTime::now(),
    }
}

fn record(p: &PricePoint) {
    let micros = (p.price.value() * rust_decimal::Decimal::from(1_000_000))
        .trunc()
        .try_into()
        .unwrap_or(i64::MAX);
    metrics().eth_usd_price_micros.set(micros);
    let secs = p
        .obtained
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    metrics()
        .price_updated_unix
        .set(i64::try_from(secs).unwrap_or(i64::MAX));
}

async fn refresh_loop(
    http: reqwest::Client,
    url: String,
    every: Duration,
    tx: watch::Sender<PricePoint>,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match fetch(&http, &url).await {
            Ok(price) => {
                let p = point(price);
                record(&p);
                tx.send_replace(p);
            }
            Err(e) => {
                tracing::warn!(error = %e, "price refresh failed; keeping the last good price")
            }
        }
    }
}

/// The innermost cause (`Connection refused (os error 111)`): the error
/// names the oracle's URL already, which reqwest's own text repeats.
fn root_cause(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(cause) = root.source() {
        root = cause;
    }
    root.to_string()
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<EthUsdPrice, OracleError> {
    let unreachable = |e: reqwest::Error| OracleError::Unreachable {
        url: url.to_owned(),
        message: root_cause(&e),
    };
    let response = http.get(url).send().await.map_err(unreachable)?;
    if !response.status().is_success() {
        return Err(OracleError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let body = response.bytes().await.map_err(unreachable)?;
    parse_oracle(&body).map_err(|e| match e {
        None => OracleError::NoPrice {
            url: url.to_owned(),
        },
        Some(source) => OracleError::BadPrice {
            url: url.to_owned(),
            source,
        },
    })
}

#[derive(Deserialize)]
struct OracleBody<'a> {
    #[serde(borrow, default)]
    price: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ethereum: Option<Usd<'a>>,
    #[serde(borrow, default)]
    data: Option<Amount<'a>>,
}

#[derive(Deserialize)]
struct Usd<'a> {
    #[serde(borrow)]
    usd: &'a RawValue,
}

#[derive(Deserialize)]
struct Amount<'a> {
    #[serde(borrow)]
    amount: &'a RawValue,
}

/// Parses any of the three oracle shapes; `Err(None)` when none matched.
pub(crate) fn parse_oracle(body: &[u8]) -> Result<EthUsdPrice, Option<PriceError>> {
    let parsed: OracleBody = serde_json::from_slice(body).map_err(|_| None)?;
    let raw = parsed
        .price
        .or(parsed.ethereum.map(|e| e.usd))
        .or(parsed.data.map(|d| d.amount))
        .ok_or(None)?;
    raw.get().trim_matches('"').parse().map_err(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_three_oracle_shapes_parse_exactly() {
        for body in [
            r#"{"price": 3500.12}"#,
            r#"{"ethereum": {"usd": 3500.12}}"#,
            r#"{"data": {"amount": "3500.12", "base": "ETH", "currency": "USD"}}"#,
        ] {
            assert_eq!(
                parse_oracle(body.as_bytes()).unwrap().to_string(),
                "3500.12",
                "{body}"
            );
        }
    }

    #[test]
    fn oracle_body_without_price_is_an_error() {
        assert_eq!(parse_oracle(br#"{"foo": 1}"#), Err(None));
        assert_eq!(parse_oracle(b"not json"), Err(None));
    }

    #[test]
    fn zero_or_negative_oracle_price_is_rejected() {
        assert!(matches!(parse_oracle(br#"{"price": 0}"#), Err(Some(_))));
        assert!(matches!(parse_oracle(br#"{"price": "-5"}"#), Err(Some(_))));
    }
}
