//! Mozilla's edge-server rules: which submission paths are valid, and which request metadata becomes attributes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, Method, Uri, Version};
use wharf_queue::Route;

/// The namespace whose URLs use the legacy telemetry dimension order.
pub const TELEMETRY: &str = "telemetry";

/// The doc version recorded for telemetry submissions, whose URLs carry none (the payload is never opened).
pub const TELEMETRY_DOC_VERSION: &str = "unversioned";

/// Why a submission path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// 404: the path is not a submission URL for its namespace (for example a telemetry-form URL
    /// in another namespace), or the namespace is not accepted here.
    NotFound(&'static str),
    /// 400: the shape is right but a part is malformed (for example a docId that is not a UUID).
    BadRequest(String),
}

/// Who may submit to the canary's namespace ([`wharf_queue::CANARY_NAMESPACE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryAccess {
    /// No `CANARY_TOKEN` is set: the namespace follows `ALLOWED_NAMESPACES` like any other.
    AsAnyOther,
    /// The request carries the configured token: accepted whatever the allow-list says.
    Granted,
    /// A token is configured and this request lacks it: refused like an unknown namespace, so
    /// outside traffic cannot fill the prefix the deploy smoke test reads.
    Refused,
}

/// Parses the part of a submission path after `/submit/`.
pub fn parse_route(
    rest: &str,
    allowed_namespaces: &[String],
    canary: CanaryAccess,
) -> Result<Route, PathError> {
    let segments: Vec<&str> = rest.split('/').collect();
    let namespace = segments.first().copied().unwrap_or_default();
    if rest.is_empty() {
        return Err(PathError::NotFound("no namespace in the path"));
    }
    // Before the shape: `//` is a malformed path whatever its segment count.
    if segments.iter().any(|s| s.is_empty()) {
        return Err(PathError::BadRequest("empty path segment".into()));
    }
    let listed = allowed_namespaces.is_empty() || allowed_namespaces.iter().any(|n| n == namespace);
    let accepted = match canary {
        _ if namespace != wharf_queue::CANARY_NAMESPACE => listed,
        CanaryAccess::AsAnyOther => listed,
        CanaryAccess::Granted => true,
        CanaryAccess::Refused => false,
    };
    if !accepted {
        return Err(PathError::NotFound("unknown namespace"));
    }
    let route = if namespace == TELEMETRY {
        // /submit/telemetry/docId/docType/appName/appVersion/appUpdateChannel/appBuildID
        let [_, doc_id, doc_type, app_name, app_version, channel, build_id] = segments[..] else {
            return Err(PathError::NotFound(
                "telemetry paths are /submit/telemetry/<docId>/<docType>/<appName>/<appVersion>/<appUpdateChannel>/<appBuildID>",
            ));
        };
        // Not part of the S3 key, but stored in the `uri` attribute that readers split on '/'.
        for (name, value) in [
            ("appName", app_name),
            ("appVersion", app_version),
            ("appUpdateChannel", channel),
            ("appBuildID", build_id),
        ] {
            if !is_dimension(value) {
                return Err(PathError::BadRequest(format!(
                    "{name} must be 1-100 characters of letters, digits, '-', '_' or '.'"
                )));
            }
        }
        Route {
            namespace: namespace.to_string(),
            doc_type: doc_type.to_string(),
            doc_version: TELEMETRY_DOC_VERSION.to_string(),
            doc_id: doc_id.to_string(),
        }
    } else {
        let [_, doc_type, doc_version, doc_id] = segments[..] else {
            return Err(PathError::NotFound(
                "submission paths are /submit/<namespace>/<docType>/<docVersion>/<docId>",
            ));
        };
        Route {
            namespace: namespace.to_string(),
            doc_type: doc_type.to_string(),
            doc_version: doc_version.to_string(),
            doc_id: doc_id.to_string(),
        }
    };
    for (name, value) in [
        ("namespace", &route.namespace),
        ("docType", &route.doc_type),
        ("docVersion", &route.doc_version),
    ] {
        if !is_dimension(value) {
            return Err(PathError::BadRequest(format!(
                "{name} must be 1-100 characters of letters, digits, '-', '_' or '.'"
            )));
        }
    }
    // Only the hyphenated form: the braced, URN and 32-digit forms that a UUID parser also
    // takes would give one document several spellings, and braces have no place in an S3 key.
    if route.doc_id.len() != 36 || uuid::Uuid::try_parse(&route.doc_id).is_err() {
        return Err(PathError::BadRequest(
            "docId must be a UUID in its hyphenated form".into(),
        ));
    }
    Ok(route)
}

/// Dimensions end up in S3 keys, so they are restricted to characters safe in a key.
fn is_dimension(value: &str) -> bool {
    (1..=100).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value != "."
        && value != ".."
}

/// Request headers stored as attributes: (header name, attribute name).
/// Parsed once: looking a header up by `&str` parses the name on every request, which was about
/// a tenth of the attribute-building cost.
static HEADER_ATTRIBUTES: [(HeaderName, &str); 12] = [
    (HeaderName::from_static("content-length"), "content_length"),
    (HeaderName::from_static("date"), "date"),
    (HeaderName::from_static("dnt"), "dnt"),
    (HeaderName::from_static("host"), "host"),
    (HeaderName::from_static("user-agent"), "user_agent"),
    (
        HeaderName::from_static("x-forwarded-for"),
        "x_forwarded_for",
    ),
    (
        HeaderName::from_static("x-pingsender-version"),
        "x_pingsender_version",
    ),
    (HeaderName::from_static("x-debug-id"), "x_debug_id"),
    (
        HeaderName::from_static("x-pipeline-proxy"),
        "x_pipeline_proxy",
    ),
    (
        HeaderName::from_static("x-telemetry-agent"),
        "x_telemetry_agent",
    ),
    (HeaderName::from_static("x-source-tags"), "x_source_tags"),
    (HeaderName::from_static("x-lb-tags"), "x_lb_tags"),
];

/// Attributes that identify the client and are dropped when `DROP_CLIENT_IP` is set.
const CLIENT_IP_ATTRIBUTES: &[&str] = &["remote_addr", "x_forwarded_for"];

/// What the attributes are built from.
pub struct RequestMeta<'a> {
    /// Stored as `method`.
    pub method: &'a Method,
    /// Its path is stored as `uri` and its query, when not empty, as `args`.
    pub uri: &'a Uri,
    /// Stored as `protocol`, e.g. `HTTP/1.1`.
    pub version: Version,
    /// The known edge-spec headers among them become attributes; others are ignored.
    pub headers: &'a HeaderMap,
    /// The TCP peer, stored as `remote_addr` (its IP only) unless `DROP_CLIENT_IP`; `None` when
    /// the server did not record it.
    pub peer: Option<SocketAddr>,
    /// When the request arrived, stored as `submission_timestamp` to the microsecond (UTC).
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// The edge-spec message attributes of a request; absent headers are left out, never empty.
///
/// A stored header whose value is not UTF-8 fails the request with that header's name: replacing
/// the bytes would store something the client never sent, and every real client sends ASCII.
///
/// Built as a list and sorted once into the map, and the request's headers are walked once
/// (rather than one lookup per known header): this runs for every submission.
pub fn attributes(
    meta: &RequestMeta<'_>,
    drop_client_ip: bool,
) -> Result<BTreeMap<String, String>, &'static str> {
    let mut attrs: Vec<(String, String)> = Vec::with_capacity(8 + HEADER_ATTRIBUTES.len());
    attrs.push((
        "submission_timestamp".to_string(),
        // `YYYY-MM-DDTHH:MM:SS.ffffffZ`, without parsing a strftime pattern per request.
        meta.received_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    ));
    attrs.push(("uri".to_string(), meta.uri.path().to_string()));
    attrs.push(("protocol".to_string(), protocol(meta.version).to_string()));
    attrs.push(("method".to_string(), meta.method.as_str().to_string()));
    if let Some(query) = meta.uri.query().filter(|q| !q.is_empty()) {
        attrs.push(("args".to_string(), query.to_string()));
    }
    if let Some(peer) = meta.peer.filter(|_| !drop_client_ip) {
        attrs.push(("remote_addr".to_string(), ip_text(peer.ip())));
    }
    // Values of one header come one after another, so a repeated header is joined in place.
    let mut last: Option<usize> = None;
    for (name, value) in meta.headers {
        let Some(known) = HEADER_ATTRIBUTES.iter().position(|(h, _)| h == name) else {
            last = None;
            continue;
        };
        let (header, attribute) = &HEADER_ATTRIBUTES[known];
        if drop_client_ip && CLIENT_IP_ATTRIBUTES.contains(attribute) {
            continue;
        }
        let text = std::str::from_utf8(value.as_bytes()).map_err(|_| header.as_str())?;
        match last {
            Some(at) if attrs[at].0 == *attribute => {
                attrs[at].1.push_str(", ");
                attrs[at].1.push_str(text);
            }
            _ => {
                attrs.push((attribute.to_string(), text.to_string()));
                last = Some(attrs.len() - 1);
            }
        }
    }
    Ok(attrs.into_iter().collect())
}

/// An address as text: IPv4 (nearly every peer) without going through the formatter.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut out = String::with_capacity(15);
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                let (h, t, o) = (octet / 100, octet / 10 % 10, octet % 10);
                if h > 0 {
                    out.push(char::from(b'0' + h));
                }
                if h > 0 || t > 0 {
                    out.push(char::from(b'0' + t));
                }
                out.push(char::from(b'0' + o));
            }
            out
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_are_joined_and_client_addresses_can_be_dropped() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "10.0.0.1".parse().unwrap());
        headers.append("user-agent", "ua".parse().unwrap());
        headers.append("x-forwarded-for", "10.0.0.2".parse().unwrap());
        headers.append("x-unknown", "ignored".parse().unwrap());
        let uri: Uri = "/submit/a/b/1/x?q=1".parse().unwrap();
        let meta = RequestMeta {
            method: &Method::POST,
            uri: &uri,
            version: Version::HTTP_11,
            headers: &headers,
            peer: Some("192.0.2.7:5000".parse().unwrap()),
            received_at: chrono::DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap(),
        };
        let kept = attributes(&meta, false).unwrap();
        assert_eq!(kept["x_forwarded_for"], "10.0.0.1, 10.0.0.2");
        assert_eq!(kept["user_agent"], "ua");
        assert_eq!(kept["remote_addr"], "192.0.2.7");
        assert_eq!(kept["args"], "q=1");
        assert_eq!(kept["submission_timestamp"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(kept.len(), 8, "{kept:?}");
        let dropped = attributes(&meta, true).unwrap();
        assert!(!dropped.contains_key("x_forwarded_for"));
        assert!(!dropped.contains_key("remote_addr"));
        assert_eq!(dropped.len(), 6, "{dropped:?}");
    }

    #[test]
    fn ipv4_text_matches_the_formatter() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.100.255",
            "127.0.0.1",
            "192.168.10.9",
            "255.255.255.255",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(parsed), parsed.to_string());
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_text(v6), "2001:db8::1");
    }

    const ID: &str = "2c3a0767-d84a-4d02-8a92-fa54a3376049";
    const ANY: CanaryAccess = CanaryAccess::AsAnyOther;

    #[test]
    fn generic_and_telemetry_paths_parse() {
        let r = parse_route(&format!("eng-workflow/hgpush/1/{ID}"), &[], ANY).unwrap();
        assert_eq!(
            (
                r.namespace.as_str(),
                r.doc_type.as_str(),
                r.doc_version.as_str(),
                r.doc_id.as_str()
            ),
            ("eng-workflow", "hgpush", "1", ID)
        );
        let t = parse_route(
            &format!("telemetry/{ID}/main/Firefox/61.0a1/nightly/20180328030202"),
            &[],
            ANY,
        )
        .unwrap();
        assert_eq!(
            (t.doc_type.as_str(), t.doc_version.as_str()),
            ("main", TELEMETRY_DOC_VERSION)
        );
    }

    #[test]
    fn shapes_and_namespaces_that_do_not_fit_are_not_found() {
        assert!(matches!(
            parse_route(&format!("telemetry/x/1/{ID}"), &[], ANY),
            Err(PathError::NotFound(_))
        ));
        assert!(matches!(
            parse_route(
                &format!("ns/{ID}/main/Firefox/61.0a1/nightly/2018"),
                &[],
                ANY
            ),
            Err(PathError::NotFound(_))
        ));
        let allowed = vec!["a".to_string()];
        assert!(matches!(
            parse_route(&format!("b/t/1/{ID}"), &allowed, ANY),
            Err(PathError::NotFound(_))
        ));
        assert!(parse_route(&format!("a/t/1/{ID}"), &allowed, ANY).is_ok());
    }

    #[test]
    fn the_canary_namespace_needs_its_token_when_one_is_set() {
        let canary = format!("wharf-canary/canary/1/{ID}");
        let listed = vec!["a".to_string()];
        assert!(
            parse_route(&canary, &[], ANY).is_ok(),
            "no token, no list: like any other"
        );
        assert!(
            parse_route(&canary, &listed, ANY).is_err(),
            "no token: the list applies"
        );
        assert!(parse_route(&canary, &listed, CanaryAccess::Granted).is_ok());
        assert!(matches!(
            parse_route(&canary, &[], CanaryAccess::Refused),
            Err(PathError::NotFound(_))
        ));
        assert!(
            parse_route(&format!("a/t/1/{ID}"), &listed, CanaryAccess::Refused).is_ok(),
            "the token concerns the canary namespace only"
        );
    }

    #[test]
    fn malformed_parts_are_bad_requests() {
        assert!(matches!(
            parse_route("ns/t/1/not-a-uuid", &[], ANY),
            Err(PathError::BadRequest(_))
        ));
        assert!(matches!(
            parse_route(&format!("ns/t%20x/1/{ID}"), &[], ANY),
            Err(PathError::BadRequest(_))
        ));
        assert!(matches!(
            parse_route(&format!("ns/../1/{ID}"), &[], ANY),
            Err(PathError::BadRequest(_))
        ));
        for other_form in [
            "2c3a0767d84a4d028a92fa54a3376049".to_string(),
            format!("{{{ID}}}"),
            format!("urn:uuid:{ID}"),
        ] {
            assert!(
                matches!(
                    parse_route(&format!("ns/t/1/{other_form}"), &[], ANY),
                    Err(PathError::BadRequest(_))
                ),
                "{other_form}"
            );
        }
        assert!(parse_route(&format!("ns/t/1/{}", ID.to_uppercase()), &[], ANY).is_ok());
    }
}
