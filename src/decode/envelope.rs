//! The record's envelope and its ticket fields, read in one pass when well
//! formed, in two (envelope, then `data`) to name what is wrong.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::rejection::Rejection;

/// The one billable event type.
pub(crate) const BILLABLE_TYPE: &str = "create_signed_ticket";

/// The record's envelope, its `data` either kept as JSON text (`D` =
/// `&RawValue`) or read as a ticket's fields in the same pass.
#[derive(Deserialize)]
pub(super) struct Envelope<'a, D> {
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default, deserialize_with = "text")]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) timestamp: Option<&'a RawValue>,
    #[serde(default = "Option::default")]
    pub(super) data: Option<D>,
}

/// The ticket's fields. Identity fields must be strings when present (a
/// number there is a producer bug worth a dead letter); the others are kept
/// as the record's own JSON text and read leniently ([`Scalar`]) when used,
/// so no `serde_json::Value` is built for them.
#[derive(Deserialize)]
pub(super) struct TicketData<'a> {
    #[serde(borrow, default)]
    pub(super) request_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) auth_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) client_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    pub(super) usage_subject: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) usage_subject_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) computed_fee: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) current_time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) current_time_unix: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) pipeline: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) model_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) manifest_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) session_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) app: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) session_status: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) orch_address: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) pixels: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) num_tickets: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) billable_secs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) sequence_number: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) previous_time: Option<&'a RawValue>,
}

/// A string field, borrowed from the record unless it holds an escape.
/// serde's own `Option<Cow<str>>` is always owned, `borrow` or not
/// (serde-rs/serde#1497): three copies per ticket (its id, its type, its
/// `auth_id`) that this avoids.
fn text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Text<'de>(Cow<'de, str>);
    impl<'de> Deserialize<'de> for Text<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Text<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                    Ok(Text(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                    Ok(Text(Cow::Owned(v.to_owned())))
                }
                fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                    Ok(Text(Cow::Owned(v)))
                }
            }
            deserializer.deserialize_str(Visitor)
        }
    }
    Ok(Option::<Text<'de>>::deserialize(deserializer)?.map(|Text(text)| text))
}

impl<'a, D> Envelope<'a, D> {
    pub(super) fn map_data<E>(self, f: impl FnOnce(D) -> E) -> Envelope<'a, E> {
        Envelope {
            id: self.id,
            kind: self.kind,
            timestamp: self.timestamp,
            data: self.data.map(f),
        }
    }
}

/// `T` read only from a JSON object: a derived struct would also take an
/// array, field by field, and `data` must be an object.
pub(super) struct Object<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(Fields(std::marker::PhantomData))
    }
}

/// The envelope, then its `data` as a ticket's fields when the type is
/// billable, each failure named.
pub(super) fn two_step(payload: &[u8]) -> Result<Envelope<'_, TicketData<'_>>, Rejection> {
    let envelope: Envelope<&RawValue> =
        serde_json::from_slice(payload).map_err(|e| Rejection::Malformed(e.to_string()))?;
    let billable = envelope.kind.as_deref() == Some(BILLABLE_TYPE);
    let data = envelope
        .data
        .filter(|raw| billable && raw.get().starts_with('{'))
        .map(|raw| serde_json::from_str(raw.get()))
        .transpose()
        .map_err(|e| Rejection::MalformedData(e.to_string()))?;
    Ok(Envelope {
        id: envelope.id,
        kind: envelope.kind,
        timestamp: envelope.timestamp,
        data,
    })
}
