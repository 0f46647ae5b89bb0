use chrono::{DateTime, Utc};
use serde_json::Value;

use super::event_store::{DeliveryRec, StoredEvent};
use super::tables::State;

impl State {
    /// Log a validated batch (each event with its `data` parsed). Dedupe is
    /// by `(source, id)`, like OpenMeter.
    pub(crate) fn ingest(&mut self, batch: Vec<(StoredEvent, Option<Value>)>, now: DateTime<Utc>) {
        self.events.deliveries.reserve(batch.len());
        for (event, data) in batch {
            if self.lost_event_ids.remove(&event.id) {
                self.claim_only([&event]);
                continue;
            }
            let customer = self.subject_owner(&event.subject);
            let fresh = self
                .events
                .seen
                .insert((event.source.clone(), event.id.clone()));
            let index = self.events.deliveries.len();
            let meter_values = self.meter_values(&event.ty, data.as_ref());
            let delivery = DeliveryRec {
                event,
                meter_values,
                received_at: now,
                duplicate: !fresh,
                customer,
            };
            if fresh {
                self.events.unique.push(index);
                self.events.by_time.insert((delivery.sort_ns(), index));
                self.events
                    .by_id
                    .entry(delivery.event.id.clone())
                    .or_default()
                    .push(index);
                self.events
                    .by_subject
                    .entry(delivery.event.subject.clone())
                    .or_default()
                    .insert((delivery.sort_ns(), index));
            }
            self.events.deliveries.push(delivery);
        }
    }

    /// What each meter of `ty` reads from `data`.
    fn meter_values(&self, ty: &str, data: Option<&Value>) -> Box<[Option<Box<str>>]> {
        self.meters
            .iter()
            .map(|m| {
                let path = m.value_property.as_deref().filter(|_| m.event_type == ty)?;
                Some(super::usage::json_value(data, path).into_boxed_str())
            })
            .collect()
    }

    /// The dedupe half of a failed ingest (#5118): every `(source, id)` of
    /// the batch is claimed, nothing is stored, so later deliveries of these
    /// ids count as duplicates.
    pub(crate) fn claim_only<'e>(&mut self, batch: impl IntoIterator<Item = &'e StoredEvent>) {
        for event in batch {
            self.events
                .seen
                .insert((event.source.clone(), event.id.clone()));
        }
    }
}
