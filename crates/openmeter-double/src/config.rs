//! How a double behaves: what the server layer and the test handle share.

/// How a [`crate::Double`] behaves.
#[derive(Debug, Clone)]
pub struct DoubleConfig {
    /// When set, every request must carry `Authorization: Bearer <token>`
    /// (else 401), so tests exercise the client's auth header.
    pub token: Option<String>,
    /// `Retry-After` seconds sent with injected 429/503 answers, so clients
    /// that honour it are exercised without slowing tests much.
    pub retry_after_secs: u64,
    /// Largest accepted request body (ingest batches can be big).
    pub max_body_bytes: usize,
    /// The server's `aggregation.enableDecimalPrecision` (default false,
    /// `app/config/aggregation.go`): when false a meter query sums each
    /// value as a float64 (`toFloat64OrNull`), when true as a
    /// `Decimal128(19)` (`toDecimal128OrNull`,
    /// `openmeter/streaming/clickhouse/meter_query.go`). Either way the
    /// answer is a float64 by then (`scanRows`, `InexactFloat64`).
    pub decimal_precision: bool,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        Self {
            token: None,
            retry_after_secs: 1,
            max_body_bytes: 64 * 1024 * 1024,
            decimal_precision: false,
        }
    }
}
