//! The operations the double serves, used to count calls and target faults.

use axum::http::Method;

/// One API operation. Counters and fault injection are keyed by this, so a
/// test can say "the next two customer creates fail with 503".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    ListCustomers,
    CreateCustomer,
    GetCustomer,
    ListSubscriptions,
    CreateSubscription,
    GetSubscription,
    CancelSubscription,
    UnscheduleCancelation,
    ListPlans,
    CreatePlan,
    GetPlan,
    PublishPlan,
    ListMeters,
    CreateMeter,
    GetMeter,
    QueryMeter,
    ListFeatures,
    CreateFeature,
    GetFeature,
    IngestEvents,
    ListEvents,
}

impl Route {
    /// Every route, in declaration order (`ALL[r.index()] == r`).
    pub const ALL: [Route; 21] = [
        Route::ListCustomers,
        Route::CreateCustomer,
        Route::GetCustomer,
        Route::ListSubscriptions,
        Route::CreateSubscription,
        Route::GetSubscription,
        Route::CancelSubscription,
        Route::UnscheduleCancelation,
        Route::ListPlans,
        Route::CreatePlan,
        Route::GetPlan,
        Route::PublishPlan,
        Route::ListMeters,
        Route::CreateMeter,
        Route::GetMeter,
        Route::QueryMeter,
        Route::ListFeatures,
        Route::CreateFeature,
        Route::GetFeature,
        Route::IngestEvents,
        Route::ListEvents,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Which route a request targets, if any. Accepts both the self-hosted
    /// (`/api/v3`) and the Konnect (`/v3`) prefix.
    pub fn classify(method: &Method, path: &str) -> Option<Route> {
        let rest = path
            .strip_prefix("/api/v3/openmeter/")
            .or_else(|| path.strip_prefix("/v3/openmeter/"))?;
        let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        let get = method == Method::GET;
        let post = method == Method::POST;
        match (segs.as_slice(), get, post) {
            (["customers"], true, _) => Some(Route::ListCustomers),
            (["customers"], _, true) => Some(Route::CreateCustomer),
            (["customers", _], true, _) => Some(Route::GetCustomer),
            (["subscriptions"], true, _) => Some(Route::ListSubscriptions),
            (["subscriptions"], _, true) => Some(Route::CreateSubscription),
            (["subscriptions", _], true, _) => Some(Route::GetSubscription),
            (["subscriptions", _, "cancel"], _, true) => Some(Route::CancelSubscription),
            (["subscriptions", _, "unschedule-cancelation"], _, true) => {
                Some(Route::UnscheduleCancelation)
            }
            (["plans"], true, _) => Some(Route::ListPlans),
            (["plans"], _, true) => Some(Route::CreatePlan),
            (["plans", _], true, _) => Some(Route::GetPlan),
            (["plans", _, "publish"], _, true) => Some(Route::PublishPlan),
            (["meters"], true, _) => Some(Route::ListMeters),
            (["meters"], _, true) => Some(Route::CreateMeter),
            (["meters", _], true, _) => Some(Route::GetMeter),
            (["meters", _, "query"], _, true) => Some(Route::QueryMeter),
            (["features"], true, _) => Some(Route::ListFeatures),
            (["features"], _, true) => Some(Route::CreateFeature),
            (["features", _], true, _) => Some(Route::GetFeature),
            (["events"], true, _) => Some(Route::ListEvents),
            (["events"], _, true) => Some(Route::IngestEvents),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_indexed_in_declaration_order() {
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn classify_accepts_both_prefixes() {
        let m = Method::POST;
        assert_eq!(
            Route::classify(&m, "/api/v3/openmeter/plans/01H/publish"),
            Some(Route::PublishPlan)
        );
        assert_eq!(
            Route::classify(&Method::GET, "/v3/openmeter/events"),
            Some(Route::ListEvents)
        );
        assert_eq!(Route::classify(&m, "/v4/openmeter/events"), None);
    }
}
