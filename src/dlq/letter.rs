//! The dead letter as written: the one place its format is known.
//!
//! In the DLQ topic a letter is the original record (key, payload, headers)
//! plus `ticketmeter.dlq.*` headers: reason, kind, the source topic,
//! partition and offset, and the time it was written; a payload cut to fit
//! the topic adds the original's size and SHA-256 and the spill file that
//! holds it. In a file a letter is one JSON line, a [`FileEntry`].
//! [`Letter`] reads both back, for `audit` and `dlq replay`.

use std::path::Path;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{Header, OwnedHeaders};
use serde::{Deserialize, Serialize};

use super::dead_letter::DeadLetter;
use crate::encoding::{hex, parse_rfc3339};

/// Header names on dead letters in the DLQ topic.
pub(super) const HEADER_PREFIX: &str = "ticketmeter.dlq.";
/// Longest `reason` header kept (OpenMeter's detail can be long).
const MAX_REASON_BYTES: usize = 4 * 1024;

// Header names after the prefix, written by `meta_headers` and
// `topic_headers` and read by `Letter::from_topic`.
const REASON: &str = "reason";
const KIND: &str = "kind";
const SOURCE_TOPIC: &str = "source.topic";
const SOURCE_PARTITION: &str = "source.partition";
const SOURCE_OFFSET: &str = "source.offset";
const TIME: &str = "time";
const TRUNCATED: &str = "truncated";
const ORIGINAL_SIZE: &str = "original.size";
const ORIGINAL_SHA256: &str = "original.sha256";
const SPILL: &str = "spill";

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
            (TRUNCATED, "true".to_owned()),
            (ORIGINAL_SIZE, t.original_size.to_string()),
            (ORIGINAL_SHA256, t.sha256.clone()),
            (SPILL, t.spill.display().to_string()),
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
fn letter_header(headers: &[(String, Bytes)], name: &str) -> Option<String> {
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
            REASON,
            truncate_utf8(&letter.reason, MAX_REASON_BYTES).to_owned(),
        ),
        (KIND, letter.kind.as_str().to_owned()),
        (SOURCE_TOPIC, origin.source.to_string()),
        (SOURCE_PARTITION, origin.position.partition.to_string()),
        (SOURCE_OFFSET, origin.position.offset.to_string()),
        (TIME, written(letter)),
    ]
}

/// When the letter was written, as both media write it.
fn written(letter: &DeadLetter) -> String {
    letter.at.to_rfc3339_opts(SecondsFormat::Millis, true)
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
pub(super) struct FileEntry {
    pub(super) reason: String,
    pub(super) kind: String,
    pub(super) time: String,
    pub(super) source: String,
    pub(super) partition: i32,
    pub(super) offset: i64,
    /// The original payload, when it is UTF-8 (it nearly always is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) payload: Option<String>,
    /// The original payload in hex, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) payload_hex: Option<String>,
}

impl From<&DeadLetter> for FileEntry {
    fn from(letter: &DeadLetter) -> Self {
        let bytes = &letter.record.payload;
        let text = std::str::from_utf8(bytes).ok().map(str::to_owned);
        Self {
            reason: letter.reason.clone(),
            kind: letter.kind.as_str().to_owned(),
            time: written(letter),
            source: letter.record.origin.source.to_string(),
            partition: letter.record.origin.position.partition,
            offset: letter.record.origin.position.offset,
            payload_hex: text.is_none().then(|| hex(bytes)),
            payload: text,
        }
    }
}

impl FileEntry {
    /// What makes two lines the same letter: the record (where it was read,
    /// its bytes), not when or why it was dead-lettered.
    pub(super) fn fingerprint(&self) -> Option<[u8; 32]> {
        let payload = self.payload_bytes()?;
        Some(fingerprint(
            &self.source,
            self.partition,
            self.offset,
            &payload,
        ))
    }

    /// The original payload bytes.
    pub(super) fn payload_bytes(&self) -> Option<Bytes> {
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

/// A letter's record as one digest; see [`FileEntry::fingerprint`].
pub(super) fn fingerprint(source: &str, partition: i32, offset: i64, payload: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    digest.update((source.len() as u64).to_be_bytes());
    digest.update(source.as_bytes());
    digest.update(partition.to_be_bytes());
    digest.update(offset.to_be_bytes());
    digest.update(payload);
    digest.finalize().into()
}

/// A dead letter as read back, from the DLQ topic or a dead-letter file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Letter {
    /// The original payload (cut short when `truncated`).
    pub(crate) payload: Bytes,
    /// Why it was dead-lettered; `None` for a topic record without the
    /// header, which is no letter of ours.
    pub(crate) reason: Option<String>,
    /// When the letter was written.
    pub(crate) written: Option<DateTime<Utc>>,
    /// Where the original record was read, when the letter says.
    pub(crate) origin: Option<LetterOrigin>,
    /// Set when the payload was cut to fit the topic: the spill file
    /// holding the full original, as the letter names it (empty if not).
    pub(crate) truncated: Option<String>,
}

/// Where a dead letter's original record was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LetterOrigin {
    /// The topic, or the file's name.
    pub(crate) source: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

impl Letter {
    /// A record of the DLQ topic: its payload and `ticketmeter.dlq.*`
    /// headers.
    pub(crate) fn from_topic(payload: &Bytes, headers: &[(String, Bytes)]) -> Self {
        let header = |name: &str| letter_header(headers, name);
        let origin = match (
            header(SOURCE_TOPIC),
            header(SOURCE_PARTITION).and_then(|p| p.parse().ok()),
            header(SOURCE_OFFSET).and_then(|o| o.parse().ok()),
        ) {
            (Some(source), Some(partition), Some(offset)) => Some(LetterOrigin {
                source,
                partition,
                offset,
            }),
            _ => None,
        };
        Self {
            payload: payload.clone(),
            reason: header(REASON),
            written: header(TIME).as_deref().and_then(parse_rfc3339),
            origin,
            truncated: header(TRUNCATED).map(|_| header(SPILL).unwrap_or_default()),
        }
    }

    /// One line of a dead-letter file; `None` when it is not one.
    pub(crate) fn from_line(line: &[u8]) -> Option<Self> {
        let entry: FileEntry = serde_json::from_slice(line).ok()?;
        Some(Self {
            payload: entry.payload_bytes()?,
            written: parse_rfc3339(&entry.time),
            origin: Some(LetterOrigin {
                source: entry.source,
                partition: entry.partition,
                offset: entry.offset,
            }),
            reason: Some(entry.reason),
            truncated: None,
        })
    }
}

/// The original payload of one line of a dead-letter file, for
/// `dlq replay --file` (see [`crate::source::file::LineReader`]).
pub(crate) fn letter_line(line: &[u8]) -> Option<Bytes> {
    Letter::from_line(line).map(|letter| letter.payload)
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

    /// What `Letter` reads back of a letter, in whichever medium.
    fn expected(sent: &DeadLetter, truncated: Option<String>) -> Letter {
        Letter {
            payload: sent.record.payload.clone(),
            reason: Some(sent.reason.clone()),
            written: parse_rfc3339(&written(sent)),
            origin: Some(LetterOrigin {
                source: "t".into(),
                partition: 2,
                offset: 7,
            }),
            truncated,
        }
    }

    #[test]
    fn a_letter_reads_back_from_its_file_line_as_written() {
        let sent = letter(b"{}");
        let line = serde_json::to_vec(&FileEntry::from(&sent)).unwrap();
        assert_eq!(Letter::from_line(&line), Some(expected(&sent, None)));
        assert_eq!(Letter::from_line(b"{}"), None);
    }

    #[test]
    fn a_letter_reads_back_from_its_topic_headers_as_written() {
        use rdkafka::message::Headers;
        let sent = letter(b"{}");
        let truncation = Truncation {
            original_size: 10,
            sha256: "ab".into(),
            spill: Path::new("/spill/dead-letters.jsonl"),
        };
        let headers = topic_headers(&sent, Some(&truncation));
        let headers: Vec<(String, Bytes)> = headers
            .iter()
            .map(|h| (h.key.to_owned(), Bytes::copy_from_slice(h.value.unwrap())))
            .collect();
        let read = Letter::from_topic(&sent.record.payload, &headers);
        let spill = Some("/spill/dead-letters.jsonl".to_owned());
        assert_eq!(read, expected(&sent, spill));
        let foreign = Letter::from_topic(&sent.record.payload, &[]);
        assert_eq!((foreign.reason, foreign.origin), (None, None));
    }
}
