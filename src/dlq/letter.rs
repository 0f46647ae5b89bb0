//! The dead letter as written: the one place its format is known.
//!
//! In the DLQ topic a letter is the original record (key, payload, headers)
//! plus `ticketmeter.dlq.*` headers: reason, kind, the source topic,
//! partition and offset, and the time it was written; a payload cut to fit
//! the topic adds the original's size and SHA-256 and the spill file that
//! holds it. In a file a letter is one JSON line, a [`FileEntry`].

use std::path::Path;

use bytes::Bytes;
use chrono::SecondsFormat;
use rdkafka::message::{Header, OwnedHeaders};
use serde::{Deserialize, Serialize};

use super::DeadLetter;

/// Header names on dead letters in the DLQ topic.
pub(crate) const HEADER_PREFIX: &str = "ticketmeter.dlq.";
/// Longest `reason` header kept (OpenMeter's detail can be long).
const MAX_REASON_BYTES: usize = 4 * 1024;

/// How a letter's payload was cut to fit the topic.
pub(super) struct Truncation<'a> {
    pub(super) original_size: usize,
    pub(super) sha256: String,
    /// The spill file holding the full original.
    pub(super) spill: &'a Path,
}

/// The headers a letter goes to the topic with: the record's own, then
/// `ticketmeter.dlq.*`.
pub(super) fn topic_headers(
    letter: &DeadLetter,
    truncation: Option<&Truncation<'_>>,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    for (key, value) in original_headers(letter) {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_ref()),
        });
    }
    let mut meta = meta_headers(letter);
    if let Some(t) = truncation {
        meta.extend([
            ("truncated", "true".to_owned()),
            ("original.size", t.original_size.to_string()),
            ("original.sha256", t.sha256.clone()),
            ("spill", t.spill.display().to_string()),
        ]);
    }
    for (name, value) in &meta {
        let key = format!("{HEADER_PREFIX}{name}");
        headers = headers.insert(Header {
            key: &key,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

/// The value of dead-letter header `ticketmeter.dlq.<name>` among
/// `headers`, as text.
pub(crate) fn letter_header(headers: &[(String, Bytes)], name: &str) -> Option<String> {
    let key = format!("{HEADER_PREFIX}{name}");
    headers
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// The record's own headers, less any `ticketmeter.dlq.*` of an earlier
/// dead-lettering (a replayed letter gets fresh ones).
pub(super) fn original_headers(letter: &DeadLetter) -> impl Iterator<Item = &(String, Bytes)> {
    letter
        .record
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with(HEADER_PREFIX))
}

/// `ticketmeter.dlq.*` headers: reason, kind and origin.
pub(super) fn meta_headers(letter: &DeadLetter) -> Vec<(&'static str, String)> {
    let origin = &letter.record.origin;
    vec![
        (
            "reason",
            truncate_utf8(&letter.reason, MAX_REASON_BYTES).to_owned(),
        ),
        ("kind", letter.kind.as_str().to_owned()),
        ("source.topic", origin.source.to_string()),
        ("source.partition", origin.position.partition.to_string()),
        ("source.offset", origin.position.offset.to_string()),
        (
            "time",
            letter.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        ),
    ]
}

/// The longest prefix of `text` within `max` bytes, on a char boundary.
fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    &text[..end]
}

/// One line of a dead-letter file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    pub(crate) reason: String,
    pub(crate) kind: String,
    pub(crate) time: String,
    pub(crate) source: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// The original payload, when it is UTF-8 (it nearly always is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) payload: Option<String>,
    /// The original payload in hex, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) payload_hex: Option<String>,
}

impl From<&DeadLetter> for FileEntry {
    fn from(letter: &DeadLetter) -> Self {
        let bytes = &letter.record.payload;
        let text = std::str::from_utf8(bytes).ok().map(str::to_owned);
        Self {
            reason: letter.reason.clone(),
            kind: letter.kind.as_str().to_owned(),
            time: letter.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            source: letter.record.origin.source.to_string(),
            partition: letter.record.origin.position.partition,
            offset: letter.record.origin.position.offset,
            payload_hex: text
                .is_none()
                .then(|| bytes.iter().map(|b| format!("{b:02x}")).collect()),
            payload: text,
        }
    }
}

/// The original payload of one line of a dead-letter file, for
/// `dlq replay --file` (see [`crate::source::file::LineReader`]).
pub(crate) fn letter_line(line: &[u8]) -> Option<Bytes> {
    serde_json::from_slice::<FileEntry>(line)
        .ok()?
        .payload_bytes()
}

impl FileEntry {
    /// The original payload bytes.
    pub(crate) fn payload_bytes(&self) -> Option<Bytes> {
        if let Some(text) = &self.payload {
            return Some(Bytes::from(text.clone().into_bytes()));
        }
        let hex = self.payload_hex.as_deref()?;
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect();
        bytes.map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::tests::letter;

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        assert_eq!(truncate_utf8("ééé", 3), "é");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }

    #[test]
    fn file_entry_keeps_utf8_payload_verbatim() {
        let e = FileEntry::from(&letter(br#"{"a":1}"#));
        assert_eq!(e.payload.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!((e.partition, e.offset), (2, 7));
        assert_eq!(e.payload_bytes().unwrap().as_ref(), br#"{"a":1}"#);
    }

    #[test]
    fn file_entry_round_trips_binary_payload_as_hex() {
        let e = FileEntry::from(&letter(&[0xff, 0x00, 0x10]));
        assert_eq!(e.payload_hex.as_deref(), Some("ff0010"));
        assert_eq!(e.payload_bytes().unwrap().as_ref(), &[0xff, 0x00, 0x10]);
    }
}
