//! Listing: every page of a page-paginated list, a whole collection in id
//! order, and stored events by cursor.

use reqwest::Method;
use serde::de::DeserializeOwned;

use super::OpenMeterClient;
use crate::openmeter::error::ApiError;
use crate::openmeter::model::{CursorPage, Customer, IngestedEvent, Page, Subscription};

/// Page size for list calls; OpenMeter's default is smaller.
const PAGE_SIZE: u32 = 100;
/// A runaway server cannot make a list call loop for ever.
const MAX_PAGES: u32 = 1000;
/// Page size when reading a whole collection: the server's maximum
/// (`pkg/framework/commonhttp/pagination.go`, `MaxPageSize`).
pub(crate) const BULK_PAGE_SIZE: u32 = 1000;

/// Events per page when listing them: the server's maximum
/// (`meterevent.MaximumLimit`).
pub(crate) const EVENT_PAGE_SIZE: u32 = 100;

/// Filters of `GET /openmeter/events` (deepObject `filter[field][op]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EventQuery {
    pub source: Option<String>,
    pub kind: Option<String>,
    pub subject: Option<String>,
    /// RFC 3339 bounds on the event `time`: `time_from` and `time_to`
    /// inclusive, `time_before` exclusive.
    pub time_from: Option<String>,
    pub time_to: Option<String>,
    pub time_before: Option<String>,
    /// Any of these ids (`oeq`; ids must not contain a comma).
    pub ids: Vec<String>,
}

impl EventQuery {
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = Vec::new();
        let optional = [
            ("filter[source][eq]", &self.source),
            ("filter[type][eq]", &self.kind),
            ("filter[subject][eq]", &self.subject),
            ("filter[time][gte]", &self.time_from),
            ("filter[time][lte]", &self.time_to),
            ("filter[time][lt]", &self.time_before),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                params.push((name, value.clone()));
            }
        }
        if !self.ids.is_empty() {
            params.push(("filter[id][oeq]", self.ids.join(",")));
        }
        params
    }
}

/// One page of stored events; `next` is `None` on the last one.
#[derive(Debug)]
pub(super) struct EventPage {
    pub events: Vec<IngestedEvent>,
    pub next: Option<String>,
}

/// The pages of stored events matching a query, following the cursor until
/// the last page (or a cursor that does not move).
pub(crate) struct EventPages<'a> {
    client: &'a OpenMeterClient,
    query: &'a EventQuery,
    after: Option<String>,
    done: bool,
}

impl EventPages<'_> {
    /// The next page's events; `None` after the last page.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<IngestedEvent>>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .client
            .list_events_page(self.query, self.after.as_deref())
            .await?;
        match page.next {
            Some(next) if Some(&next) != self.after.as_ref() => self.after = Some(next),
            _ => self.done = true,
        }
        Ok(Some(page.events))
    }
}

impl OpenMeterClient {
    /// Every stored event matching `query`, a page at a time.
    pub(crate) fn event_pages<'a>(&'a self, query: &'a EventQuery) -> EventPages<'a> {
        EventPages {
            client: self,
            query,
            after: None,
            done: false,
        }
    }

    /// One page of stored events matching `query`, after the cursor `after`.
    async fn list_events_page(
        &self,
        query: &EventQuery,
        after: Option<&str>,
    ) -> Result<EventPage, ApiError> {
        let size = EVENT_PAGE_SIZE.to_string();
        let mut params = query.params();
        params.push(("page[size]", size));
        if let Some(cursor) = after {
            params.push(("page[after]", cursor.to_owned()));
        }
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page: CursorPage<IngestedEvent> = self
            .send_json::<_, ()>(
                "list events",
                Method::GET,
                "/openmeter/events",
                &pairs,
                None,
            )
            .await?;
        let next = page.meta.page.next.filter(|_| !page.data.is_empty());
        Ok(EventPage {
            events: page.data,
            next,
        })
    }

    /// Fetches every page of a page-paginated list.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        filter: &[(&str, &str)],
    ) -> Result<Vec<T>, ApiError> {
        let mut items = Vec::new();
        for number in 1..=MAX_PAGES {
            let (n, s) = (number.to_string(), PAGE_SIZE.to_string());
            let mut query: Vec<(&str, &str)> = filter.to_vec();
            query.extend([("page[number]", n.as_str()), ("page[size]", s.as_str())]);
            let page: Page<T> = self
                .send_json::<_, ()>(operation, Method::GET, path, &query, None)
                .await?;
            let fetched = page.data.len();
            items.extend(page.data);
            if fetched == 0 || !page.meta.page.has_more(items.len() as u64) {
                break;
            }
        }
        Ok(items)
    }

    /// Page `number` of every customer of the organisation, 1,000 a page
    /// in id order (the ensure cache's warm-up).
    pub(crate) async fn customer_page(&self, number: u32) -> Result<Page<Customer>, ApiError> {
        self.bulk_page("list customers", "/openmeter/customers", number)
            .await
    }

    /// Page `number` of every subscription of the organisation, 1,000 a
    /// page in id order (the ensure cache's warm-up).
    pub(crate) async fn subscription_page(
        &self,
        number: u32,
    ) -> Result<Page<Subscription>, ApiError> {
        self.bulk_page("list subscriptions", "/openmeter/subscriptions", number)
            .await
    }

    /// Every customer of the organisation, a page at a time, in id order
    /// (the audit's accounts).
    pub(crate) async fn each_customer_page(
        &self,
        visit: impl FnMut(Vec<Customer>),
    ) -> Result<(), ApiError> {
        self.each_bulk_page("list customers", "/openmeter/customers", visit)
            .await
    }

    /// Every subscription of the organisation, a page at a time, in id
    /// order (the audit's accounts).
    pub(crate) async fn each_subscription_page(
        &self,
        visit: impl FnMut(Vec<Subscription>),
    ) -> Result<(), ApiError> {
        self.each_bulk_page("list subscriptions", "/openmeter/subscriptions", visit)
            .await
    }

    /// Every page of a whole collection, one after another, until the
    /// server's total is reached or a page comes back empty.
    async fn each_bulk_page<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        mut visit: impl FnMut(Vec<T>),
    ) -> Result<(), ApiError> {
        let mut fetched = 0u64;
        for number in 1.. {
            let page: Page<T> = self.bulk_page(operation, path, number).await?;
            let count = page.data.len() as u64;
            fetched += count;
            visit(page.data);
            if count == 0 || !page.meta.page.has_more(fetched) {
                break;
            }
        }
        Ok(())
    }

    /// A page of a whole collection, of the server's maximum size, sorted
    /// by id: new items (ULIDs grow with time) then land after every page
    /// already read rather than shifting later pages by one, as the
    /// default orders (customers by name, subscriptions by `active_from`)
    /// would while a listing runs.
    async fn bulk_page<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        number: u32,
    ) -> Result<Page<T>, ApiError> {
        let (n, s) = (number.to_string(), BULK_PAGE_SIZE.to_string());
        let query = [
            ("page[number]", n.as_str()),
            ("page[size]", s.as_str()),
            ("sort", "id"),
        ];
        self.send_json::<_, ()>(operation, Method::GET, path, &query, None)
            .await
    }
}
