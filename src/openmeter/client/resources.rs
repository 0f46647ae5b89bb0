//! The calls ticketmeter makes, one per resource and operation: customers,
//! subscriptions, plans, ingest and meter queries.

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;

use super::{OpenMeterClient, CLOUDEVENT_BATCH};
use crate::domain::{CustomerKey, PlanKey};
use crate::openmeter::error::ApiError;
use crate::openmeter::model::{
    CreateCustomer, CreateSubscription, Customer, MeterQuery, MeterQueryResult, MeterQueryRow,
    MeterRef, Plan, Subscription, UsageAttribution,
};

impl OpenMeterClient {
    /// Customers whose key equals `key` (OpenMeter filters; we re-check).
    pub async fn find_customers(&self, key: &CustomerKey) -> Result<Vec<Customer>, ApiError> {
        let filter = [("filter[key][eq]", key.as_str())];
        let all: Vec<Customer> = self
            .list_all("list customers", "/openmeter/customers", &filter)
            .await?;
        Ok(all
            .into_iter()
            .filter(|c| c.key == key.as_str() && c.deleted_at.is_none())
            .collect())
    }

    /// Customers whose usage-attribution subject keys include `subject`
    /// (OpenMeter filters; we re-check).
    pub async fn find_subject_owners(&self, subject: &str) -> Result<Vec<Customer>, ApiError> {
        let filter = [("filter[usage_attribution_subject_key][eq]", subject)];
        let all: Vec<Customer> = self
            .list_all("list customers", "/openmeter/customers", &filter)
            .await?;
        Ok(all
            .into_iter()
            .filter(|c| c.owns_subject(subject) && c.deleted_at.is_none())
            .collect())
    }

    /// Creates the customer whose key, name and one subject key are `key`.
    pub async fn create_customer(&self, key: &CustomerKey) -> Result<Customer, ApiError> {
        let body = CreateCustomer {
            key: key.as_str(),
            name: key.as_str(),
            usage_attribution: UsageAttribution {
                subject_keys: [key.as_str()],
            },
        };
        self.send_json(
            "create customer",
            Method::POST,
            "/openmeter/customers",
            &[],
            Some(&body),
        )
        .await
    }

    /// Every subscription of a customer, all pages.
    pub async fn customer_subscriptions(
        &self,
        customer_id: &str,
    ) -> Result<Vec<Subscription>, ApiError> {
        let filter = [("filter[customer_id][eq]", customer_id)];
        self.list_all("list subscriptions", "/openmeter/subscriptions", &filter)
            .await
    }

    pub async fn create_subscription(
        &self,
        body: &CreateSubscription<'_>,
    ) -> Result<Subscription, ApiError> {
        self.send_json(
            "create subscription",
            Method::POST,
            "/openmeter/subscriptions",
            &[],
            Some(body),
        )
        .await
    }

    /// Every version of the plan `key`, all pages.
    pub async fn plan_versions(&self, key: &PlanKey) -> Result<Vec<Plan>, ApiError> {
        let filter = [("filter[key][eq]", key.as_str())];
        let all: Vec<Plan> = self
            .list_all("list plans", "/openmeter/plans", &filter)
            .await?;
        Ok(all.into_iter().filter(|p| p.key == key.as_str()).collect())
    }

    /// Sends one JSON array of CloudEvents, serialised by the caller. A
    /// resend is safe: OpenMeter deduplicates events by id. The pipeline's
    /// client makes one attempt: the delivery stage owns retry and
    /// back-pressure.
    pub async fn ingest_batch(&self, body: Bytes) -> Result<(), ApiError> {
        let url = self.config.endpoint.ingest();
        let response = self
            .with_retries("ingest events", || {
                self.authorized(Method::POST, url.as_str())
                    .header(CONTENT_TYPE, CLOUDEVENT_BATCH)
                    .body(body.clone())
            })
            .await?;
        drop(response);
        Ok(())
    }

    /// The id of each live meter, by key (a query's path takes the id: the
    /// spec types it a ULID and the server checks requests against it).
    pub(crate) async fn meter_ids(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, ApiError> {
        let meters: Vec<MeterRef> = self
            .list_all("list meters", "/openmeter/meters", &[])
            .await?;
        Ok(meters
            .into_iter()
            .filter(|m| m.deleted_at.is_none())
            .map(|m| (m.key, m.id))
            .collect())
    }

    /// `POST /openmeter/meters/{meter}/query`, `meter` being its id.
    pub(crate) async fn query_meter(
        &self,
        meter: &str,
        query: &MeterQuery<'_>,
    ) -> Result<Vec<MeterQueryRow>, ApiError> {
        let path = format!("/openmeter/meters/{meter}/query");
        let result: MeterQueryResult = self
            .send_json("query meter", Method::POST, &path, &[], Some(query))
            .await?;
        Ok(result.data)
    }
}
