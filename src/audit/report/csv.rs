//! The CSV, for finance: one line per customer and the totals, money as
//! exact decimal strings, then the signer's chain gaps.

use super::rows::Row;
use super::Report;

const CSV_HEADER: [&str; 13] = [
    "customer",
    "signed_events",
    "signed_fee_wei",
    "signed_usd_micros",
    "stored_events",
    "stored_fee_wei",
    "stored_usd_micros",
    "missing_events",
    "missing_usd_micros",
    "unbillable_events",
    "unbillable_usd_micros",
    "dead_lettered_events",
    "duplicate_events",
];

impl Report {
    pub(super) fn csv(&self) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let _ = writer.write_record(CSV_HEADER);
        for row in self.rows() {
            let _ = writer.write_record(row.csv());
        }
        let bytes = writer.into_inner().unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default() + &self.chain.csv()
    }
}

impl Row {
    fn csv(&self) -> Vec<String> {
        let m = &self.money;
        vec![
            self.customer.clone(),
            self.signed.to_string(),
            m.signed_fee_wei.to_string(),
            m.signed_usd_micros.to_string(),
            self.stored.to_string(),
            m.stored.stored_fee_wei.to_string(),
            m.stored.stored_usd_micros.to_string(),
            self.missing.to_string(),
            m.stored.missing_usd_micros.to_string(),
            self.unbillable.to_string(),
            m.stored.unbillable_usd_micros.to_string(),
            self.dead_lettered.to_string(),
            m.duplicates.to_string(),
        ]
    }
}
