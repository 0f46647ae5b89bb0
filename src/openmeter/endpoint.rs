//! Where the OpenMeter v3 API lives, from the original's `OPENMETER_URL`.

use thiserror::Error;
use url::Url;

#[derive(Debug, Error)]
pub enum EndpointError {
    #[error("{var} {value:?} is not an http(s) URL: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
}

/// The API base (ending in `/v3`) and the events URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    base: String,
    ingest: Url,
}

impl Endpoint {
    /// Normalises `OPENMETER_URL`. Tolerated forms:
    /// `https://us.api.konghq.com/v3/openmeter[/events]`, `…/v3`,
    /// `http://host:8888/api/v3[/openmeter[/events]]`. A bare host gets
    /// `/v3` on Konnect (`*.konghq.com`) and `/api/v3` elsewhere.
    /// `ingest_url` (`OPENMETER_INGEST_URL`) overrides the events URL.
    pub fn parse(url: &str, ingest_url: Option<&str>) -> Result<Self, EndpointError> {
        let parsed = parse_http("OPENMETER_URL", url)?;
        let mut path = parsed.path().trim_end_matches('/').to_owned();
        for suffix in ["/events", "/openmeter"] {
            if let Some(stripped) = path.strip_suffix(suffix) {
                path = stripped.to_owned();
            }
        }
        if !path.ends_with("/v3") {
            let konnect = parsed.host_str().is_some_and(|h| h.ends_with("konghq.com"));
            path.push_str(if konnect { "/v3" } else { "/api/v3" });
        }
        let mut base_url = parsed.clone();
        base_url.set_path(&path);
        base_url.set_query(None);
        let base = base_url.as_str().trim_end_matches('/').to_owned();
        let ingest = match ingest_url.map(str::trim).filter(|s| !s.is_empty()) {
            Some(raw) => parse_http("OPENMETER_INGEST_URL", raw)?,
            None => parse_http("OPENMETER_URL", &format!("{base}/openmeter/events"))?,
        };
        Ok(Self { base, ingest })
    }

    /// The URL of `path` (starting with `/openmeter/`) under the API base.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn ingest(&self) -> &Url {
        &self.ingest
    }
}

fn parse_http(var: &'static str, value: &str) -> Result<Url, EndpointError> {
    let invalid = |reason: String| EndpointError::Invalid {
        var,
        value: value.to_owned(),
        reason,
    };
    let url = Url::parse(value.trim()).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {} is not http or https",
            url.scheme()
        )));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    fn base(url: &str) -> String {
        Endpoint::parse(url, None).unwrap().base().to_owned()
    }

    #[test]
    fn konnect_forms_all_normalise_to_v3() {
        for url in [
            "https://us.api.konghq.com/v3/openmeter",
            "https://us.api.konghq.com/v3/openmeter/",
            "https://us.api.konghq.com/v3",
            "https://us.api.konghq.com/v3/openmeter/events",
            "https://us.api.konghq.com",
        ] {
            assert_eq!(base(url), "https://us.api.konghq.com/v3", "{url}");
        }
    }

    #[test]
    fn self_hosted_forms_normalise_to_api_v3() {
        for url in [
            "http://host:8888/api/v3",
            "http://host:8888/api/v3/openmeter/events",
            "http://host:8888",
        ] {
            assert_eq!(base(url), "http://host:8888/api/v3", "{url}");
        }
    }

    #[test]
    fn ingest_url_defaults_to_events_under_base() {
        let e = Endpoint::parse("https://eu.api.konghq.com/v3/openmeter", None).unwrap();
        assert_eq!(
            e.ingest().as_str(),
            "https://eu.api.konghq.com/v3/openmeter/events"
        );
        assert_eq!(
            e.url("/openmeter/customers"),
            "https://eu.api.konghq.com/v3/openmeter/customers"
        );
    }

    #[test]
    fn explicit_ingest_url_wins() {
        let e = Endpoint::parse("http://h/api/v3", Some("http://ingest:9000/x/events")).unwrap();
        assert_eq!(e.ingest().as_str(), "http://ingest:9000/x/events");
    }

    #[test]
    fn non_http_url_is_rejected() {
        assert!(Endpoint::parse("ftp://h", None).is_err());
        assert!(Endpoint::parse("not a url", None).is_err());
    }
}
