//! Today's collectors' dimensions, read leniently: one that cannot be read
//! is left out and named, never a dead letter.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::envelope::TicketData;
use super::scalar::{lenient_number, lenient_text, Scalar};
use crate::domain::split_inside;

/// What a missing dimension is sent as.
const UNKNOWN: &str = "unknown";

/// The fields meters group by or sum besides the fee, read leniently; the
/// CloudEvent's `data` carries them as they are ([`crate::map::UsageData`]).
/// Their texts share one string, so a ticket's dimensions cost one
/// allocation, not nine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dimensions {
    /// Each field's text, one after another, in [`Field`] order. A number
    /// is its exact JSON digits; empty when it could not be read.
    text: String,
    /// Where each field's text ends in `text`.
    ends: [usize; FIELDS],
    /// Dimensions left out because their value could not be read.
    pub unreadable: Vec<&'static str>,
}

/// The dimensions, in the order `text` holds them.
#[derive(Clone, Copy)]
enum Field {
    Pipeline,
    ModelId,
    ManifestId,
    App,
    SessionStatus,
    OrchAddress,
    Pixels,
    NumTickets,
    BillableSecs,
}

const FIELDS: usize = Field::BillableSecs as usize + 1;

impl Dimensions {
    /// `values` in [`Field`] order, copied into one string.
    fn new(values: [&str; FIELDS], unreadable: Vec<&'static str>) -> Self {
        let mut text = String::with_capacity(values.iter().map(|v| v.len()).sum());
        let ends = values.map(|value| {
            text.push_str(value);
            text.len()
        });
        Self {
            text,
            ends,
            unreadable,
        }
    }

    fn get(&self, field: Field) -> &str {
        let i = field as usize;
        let start = i.checked_sub(1).map_or(0, |before| self.ends[before]);
        self.text.get(start..self.ends[i]).unwrap_or_default()
    }

    /// A number's JSON digits; `None`, and left out of `data`, when the
    /// event's value could not be read as a number.
    fn number(&self, field: Field) -> Option<&str> {
        Some(self.get(field)).filter(|digits| !digits.is_empty())
    }

    pub fn pipeline(&self) -> &str {
        self.get(Field::Pipeline)
    }

    pub fn model_id(&self) -> &str {
        self.get(Field::ModelId)
    }

    pub fn manifest_id(&self) -> &str {
        self.get(Field::ManifestId)
    }

    pub fn app(&self) -> &str {
        self.get(Field::App)
    }

    pub fn session_status(&self) -> &str {
        self.get(Field::SessionStatus)
    }

    pub fn orch_address(&self) -> &str {
        self.get(Field::OrchAddress)
    }

    pub fn pixels(&self) -> Option<&str> {
        self.number(Field::Pixels)
    }

    pub fn num_tickets(&self) -> Option<&str> {
        self.number(Field::NumTickets)
    }

    pub fn billable_secs(&self) -> Option<&str> {
        self.number(Field::BillableSecs)
    }
}

/// Today's collectors' dimensions (pymthouse `collector.yaml`), and the
/// session id read on the way (the chain's, and `manifest_id`'s fallback).
pub(super) fn dimensions<'a>(
    data: &TicketData<'a>,
    request_id: &str,
) -> (Dimensions, Cow<'a, str>) {
    let mut unreadable = Vec::new();
    // A value that cannot be read is empty (a number's is then left out
    // of `data`) and named; a missing one is `missing`.
    let mut read = |name: &'static str,
                    value: Result<Option<Cow<'a, str>>, ()>,
                    missing: &'static str|
     -> Cow<'a, str> {
        value.map_or_else(
            |()| {
                unreadable.push(name);
                Cow::Borrowed("")
            },
            |value| value.unwrap_or(Cow::Borrowed(missing)),
        )
    };
    let text = |value: Option<&'a RawValue>| lenient_text(Scalar::read(value));
    let number = |value: Option<&'a RawValue>| lenient_number(Scalar::read(value));
    let pipeline = read("pipeline", text(data.pipeline), "");
    let model = read("model_id", text(data.model_id), "");
    let manifest = read("manifest_id", text(data.manifest_id), "");
    let session = read("session_id", text(data.session_id), "");
    let app = read("app", text(data.app), "");
    let session_status = read("session_status", text(data.session_status), "");
    let orch_address = read("orch_address", text(data.orch_address), "");
    let pixels = read("pixels", number(data.pixels), "0");
    let num_tickets = read("num_tickets", number(data.num_tickets), "0");
    let billable_secs = read("billable_secs", number(data.billable_secs), "0");
    let (pipeline, model_id) = pipeline_and_model(&pipeline, &model);
    let manifest_id = [&*manifest, &*session, request_id]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or(UNKNOWN);
    let values = [
        pipeline,
        model_id,
        manifest_id,
        &app,
        &session_status,
        &orch_address,
        &pixels,
        &num_tickets,
        &billable_secs,
    ];
    (Dimensions::new(values, unreadable), session)
}

/// `pipeline` in go-livepeer's `base:model` form is split at its first
/// colon (neither first nor last), unless the event names `model_id`.
fn pipeline_and_model<'a>(pipeline: &'a str, model: &'a str) -> (&'a str, &'a str) {
    let or_unknown = |s: &'a str| if s.is_empty() { UNKNOWN } else { s };
    if !model.is_empty() {
        return (or_unknown(pipeline), model);
    }
    split_inside(pipeline, ':').unwrap_or((or_unknown(pipeline), UNKNOWN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_colon_model_pipeline_splits_into_pipeline_and_model() {
        let split = pipeline_and_model("live-video-to-video:comfyui", "");
        assert_eq!(split, ("live-video-to-video", "comfyui"));
    }

    #[test]
    fn a_given_model_id_keeps_the_pipeline_whole() {
        assert_eq!(pipeline_and_model("a:b", "m"), ("a:b", "m"));
    }

    #[test]
    fn a_missing_pipeline_or_model_is_unknown() {
        assert_eq!(pipeline_and_model("", ""), (UNKNOWN, UNKNOWN));
        assert_eq!(pipeline_and_model("live:", ""), ("live:", UNKNOWN));
    }
}
