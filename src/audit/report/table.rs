//! The table people read: the customers and the totals aligned, then each
//! discrepancy, the chain gaps, the proof by totals and the verdict.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::rows::Row;
use super::{CustomerReport, Proof, Report};
use crate::audit::range::rfc3339;

const TABLE_HEADER: [&str; 9] = [
    "customer",
    "signed",
    "signed fee (wei)",
    "signed µUSD",
    "stored",
    "stored µUSD",
    "missing",
    "unbillable",
    "dead-lettered",
];

impl Report {
    pub(super) fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "audit of signed time {} .. {}  (source: {}; dead letters: {}; price {})",
            rfc3339(self.from),
            rfc3339(self.to),
            self.notes.source,
            self.notes.dead_letters,
            self.notes.price
        );
        out.push('\n');
        let mut rows = vec![TABLE_HEADER.map(str::to_owned).to_vec()];
        rows.extend(self.rows().iter().map(Row::table));
        let t = &self.totals;
        out.push_str(&align(&rows));
        let _ = writeln!(
            out,
            "\nunexpected (stored, not signed in range): {}   duplicates (billed twice): {}   in flight (younger than settle {}): {}",
            t.unexpected_events, t.duplicate_events, self.notes.settle, self.notes.in_flight
        );
        self.details(&mut out);
        self.chain.table(&mut out);
        if let Some(proof) = &self.proof {
            proof.lines(&mut out);
        }
        let verdict = if self.discrepancies() == 0 {
            "clean: every signed event is stored and billable, or dead-lettered with its reason"
                .to_owned()
        } else {
            format!("{} discrepancies", self.discrepancies())
        };
        let _ = writeln!(out, "\nresult: {verdict}");
        out
    }

    fn details(&self, out: &mut String) {
        let mut section = |title: &str, lines: Vec<String>| {
            if !lines.is_empty() {
                let _ = writeln!(out, "\n{title}:");
                for line in lines {
                    let _ = writeln!(out, "  {line}");
                }
            }
        };
        let each = |f: &dyn Fn(&CustomerReport) -> Vec<String>| -> Vec<String> {
            self.customers.iter().flat_map(f).collect()
        };
        section(
            "missing (signed, never stored)",
            each(&|c| {
                c.missing
                    .iter()
                    .map(|id| format!("{}  {id}", c.customer))
                    .collect()
            }),
        );
        section(
            "stored but not billable",
            each(&|c| {
                c.unbillable
                    .iter()
                    .map(|u| format!("{}  {}  {}", c.customer, u.id, u.reason))
                    .collect()
            }),
        );
        section(
            "billed twice",
            each(&|c| {
                c.duplicates
                    .iter()
                    .map(|id| format!("{}  {id}", c.customer))
                    .collect()
            }),
        );
        section(
            "dead letters (never sent)",
            each(&|c| {
                c.dead_lettered
                    .iter()
                    .map(|u| format!("{}  {}  {}", c.customer, u.id, u.reason))
                    .collect()
            }),
        );
        section(
            "unexpected (first ids)",
            self.notes.unexpected_sample.clone(),
        );
        let errors: BTreeMap<&str, &str> = self
            .notes
            .repair_errors
            .iter()
            .map(|(id, e)| (id.as_str(), e.as_str()))
            .collect();
        section(
            "repairs",
            self.repairs
                .iter()
                .map(|r| {
                    let why = errors.get(r.id.as_str()).map(|e| format!("  ({e})"));
                    format!(
                        "{}  {}  as {}{}",
                        r.action,
                        r.id,
                        r.sent_as,
                        why.unwrap_or_default()
                    )
                })
                .collect(),
        );
    }
}

impl Proof {
    fn lines(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nproof by totals (meters: {}):",
            self.meters.join(", ")
        );
        for level in &self.windows {
            let _ = writeln!(
                out,
                "  {:<7} windows compared {:>9}   differing {:>7}   meter queries {:>5}",
                level.window, level.compared, level.differing, level.queries
            );
        }
        let _ = writeln!(
            out,
            "  events proven by totals: {}   matched one by one: {}   pages of stored events read: {}",
            self.events_proven, self.events_matched, self.event_pages
        );
        let _ = writeln!(out, "  residual risk: {}", self.residual_risk);
    }
}

impl Row {
    fn table(&self) -> Vec<String> {
        let m = &self.money;
        vec![
            self.customer.clone(),
            self.signed.to_string(),
            m.signed_fee_wei.to_string(),
            m.signed_usd_micros.to_string(),
            self.stored.to_string(),
            m.stored.stored_usd_micros.to_string(),
            self.missing.to_string(),
            self.unbillable.to_string(),
            self.dead_lettered.to_string(),
        ]
    }
}

/// Left-aligns the first column, right-aligns the numbers.
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
