use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::tables::State;
use crate::model::{new_id, Feature, Labels, Meter};
use crate::problem::{ApiResult, InvalidParam, Problem};

/// A `CreateMeterRequest`, read from a body the spec accepted.
#[derive(Debug, Deserialize)]
pub(crate) struct NewMeter {
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) labels: Option<Labels>,
    pub(crate) aggregation: String,
    pub(crate) event_type: String,
    pub(crate) events_from: Option<DateTime<Utc>>,
    pub(crate) value_property: Option<String>,
    pub(crate) dimensions: Option<BTreeMap<String, String>>,
}

/// A `CreateFeatureRequest`, read from a body the spec accepted.
#[derive(Debug, Deserialize)]
pub(crate) struct NewFeature {
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) labels: Option<Labels>,
    pub(crate) meter: Option<Value>,
    pub(crate) unit_cost: Option<Value>,
}

impl State {
    /// 409 when a non-deleted meter already has the key.
    pub(crate) fn create_meter(&mut self, new: NewMeter) -> ApiResult<Meter> {
        if self.meter_by_key(&new.key).is_some() {
            return Err(Problem::conflict(format!(
                "meter with key {:?} already exists",
                new.key
            )));
        }
        let now = Utc::now();
        let meter = Meter {
            id: new_id(),
            name: new.name,
            labels: new.labels,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            key: new.key,
            aggregation: new.aggregation,
            event_type: new.event_type,
            events_from: new.events_from,
            value_property: new.value_property,
            dimensions: new.dimensions,
        };
        self.meters.push(meter.clone());
        Ok(meter)
    }

    fn meter_by_key(&self, key: &str) -> Option<&Meter> {
        self.meters
            .iter()
            .find(|m| m.key == key && m.deleted_at.is_none())
    }

    pub(crate) fn meter(&self, id: &str) -> Option<&Meter> {
        self.meters.iter().find(|m| m.id == id)
    }

    /// 400 when `meter.id` names no meter, 409 on a duplicate key.
    pub(crate) fn create_feature(&mut self, new: NewFeature) -> ApiResult<Feature> {
        let meter_id = new
            .meter
            .as_ref()
            .and_then(|m| m.get("id"))
            .and_then(Value::as_str);
        if let Some(id) = meter_id {
            if self.meter(id).is_none_or(|m| m.deleted_at.is_some()) {
                return Err(Problem::bad_request(
                    format!("meter {id} not found"),
                    vec![InvalidParam::rule(
                        "meter.id",
                        "missing_reference",
                        "meter not found",
                    )],
                ));
            }
        }
        if self
            .features
            .iter()
            .any(|f| f.key == new.key && f.deleted_at.is_none())
        {
            return Err(Problem::conflict(format!(
                "feature with key {:?} already exists",
                new.key
            )));
        }
        let now = Utc::now();
        let feature = Feature {
            id: new_id(),
            name: new.name,
            labels: new.labels,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            key: new.key,
            meter: new.meter,
            unit_cost: new.unit_cost,
        };
        self.features.push(feature.clone());
        Ok(feature)
    }

    pub(crate) fn feature(&self, id: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.id == id)
    }
}
