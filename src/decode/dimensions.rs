//! Today's collectors' dimensions, read leniently: one that cannot be read
//! is left out and named, never a dead letter.

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::Number;

use super::envelope::TicketData;
use super::scalar::{lenient_number, lenient_text, Scalar};
use crate::domain::split_inside;

/// What a missing dimension is sent as.
const UNKNOWN: &str = "unknown";

/// The fields meters group by or sum besides the fee, read leniently; the
/// CloudEvent's `data` carries them as they are ([`crate::map::UsageData`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dimensions {
    pub pipeline: String,
    pub model_id: String,
    pub manifest_id: String,
    pub app: String,
    pub session_status: String,
    pub orch_address: String,
    /// `None`, and left out of `data`, when the event's value could not
    /// be read as a number.
    pub pixels: Option<Number>,
    pub num_tickets: Option<Number>,
    pub billable_secs: Option<Number>,
    /// Dimensions left out because their value could not be read.
    pub unreadable: Vec<&'static str>,
}

/// Today's collectors' dimensions (pymthouse `collector.yaml`), and the
/// session id read on the way (the chain's, and `manifest_id`'s fallback).
pub(super) fn dimensions<'a>(
    data: &TicketData<'a>,
    request_id: &str,
) -> (Dimensions, Cow<'a, str>) {
    let mut dims = Dimensions::default();
    let mut text = |name: &'static str, value: Option<&'a RawValue>| -> Cow<'a, str> {
        lenient_text(Scalar::read(value))
            .unwrap_or_else(|()| {
                dims.unreadable.push(name);
                None
            })
            .unwrap_or_default()
    };
    let pipeline = text("pipeline", data.pipeline);
    let model = text("model_id", data.model_id);
    let manifest = text("manifest_id", data.manifest_id);
    let session = text("session_id", data.session_id);
    let app = text("app", data.app).into_owned();
    let session_status = text("session_status", data.session_status).into_owned();
    let orch_address = text("orch_address", data.orch_address).into_owned();
    let (pipeline, model_id) = pipeline_and_model(&pipeline, &model);
    let manifest_id = [&*manifest, &*session, request_id]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or(UNKNOWN)
        .to_owned();
    let mut number = |name: &'static str, value: Option<&RawValue>| -> Option<Number> {
        match lenient_number(Scalar::read(value)) {
            Ok(n) => Some(n.unwrap_or_else(|| Number::from(0u8))),
            Err(()) => {
                dims.unreadable.push(name);
                None
            }
        }
    };
    let pixels = number("pixels", data.pixels);
    let num_tickets = number("num_tickets", data.num_tickets);
    let billable_secs = number("billable_secs", data.billable_secs);
    let dimensions = Dimensions {
        pipeline,
        model_id,
        manifest_id,
        app,
        session_status,
        orch_address,
        pixels,
        num_tickets,
        billable_secs,
        unreadable: dims.unreadable,
    };
    (dimensions, session)
}

/// `pipeline` in go-livepeer's `base:model` form is split at its first
/// colon (neither first nor last), unless the event names `model_id`.
fn pipeline_and_model(pipeline: &str, model: &str) -> (String, String) {
    let or_unknown = |s: &str| if s.is_empty() { UNKNOWN } else { s }.to_owned();
    if !model.is_empty() {
        return (or_unknown(pipeline), model.to_owned());
    }
    match split_inside(pipeline, ':') {
        Some((base, model)) => (base.to_owned(), model.to_owned()),
        None => (or_unknown(pipeline), UNKNOWN.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_colon_model_pipeline_splits_into_pipeline_and_model() {
        let split = pipeline_and_model("live-video-to-video:comfyui", "");
        assert_eq!(split, ("live-video-to-video".into(), "comfyui".into()));
    }

    #[test]
    fn a_given_model_id_keeps_the_pipeline_whole() {
        assert_eq!(pipeline_and_model("a:b", "m"), ("a:b".into(), "m".into()));
    }

    #[test]
    fn a_missing_pipeline_or_model_is_unknown() {
        assert_eq!(pipeline_and_model("", ""), (UNKNOWN.into(), UNKNOWN.into()));
        assert_eq!(
            pipeline_and_model("live:", ""),
            ("live:".into(), UNKNOWN.into())
        );
    }
}
