//! Property tests of the edge rules: the path router and the attribute builder never panic, and every valid route survives a round trip.
//!
//! CI runs proptest's default 256 cases per property; `PROPTEST_CASES=100000 cargo test -p
//! wharf-web --test properties` is the long run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use proptest::prelude::*;
use wharf_web::edge::{
    self, CanaryAccess, PathError, RequestMeta, TELEMETRY, TELEMETRY_DOC_VERSION,
};

/// A dimension as the edge spec allows it: 1-100 of letters, digits, '-', '_' and '.', but not
/// `.` or `..` alone.
fn dimension() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,100}".prop_filter("dot segments are refused", |d| d != "." && d != "..")
}

fn doc_id() -> impl Strategy<Value = String> {
    (any::<u128>(), any::<bool>()).prop_map(|(bits, upper)| {
        let id = uuid::Uuid::from_u128(bits).hyphenated().to_string();
        if upper {
            id.to_uppercase()
        } else {
            id
        }
    })
}

fn allow_list() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(dimension(), 0..4)
}

fn canary() -> impl Strategy<Value = CanaryAccess> {
    prop_oneof![
        Just(CanaryAccess::AsAnyOther),
        Just(CanaryAccess::Granted),
        Just(CanaryAccess::Refused),
    ]
}

proptest! {
    /// Any text at all after `/submit/` gets an answer, never a panic.
    #[test]
    fn the_router_never_panics(rest in any::<String>(), allowed in allow_list(), access in canary()) {
        let _ = edge::parse_route(&rest, &allowed, access);
    }

    /// Paths built from '/' and the characters that matter to the router, which random strings
    /// rarely hit: empty segments, dots, percent signs, UUID-like runs.
    #[test]
    fn the_router_never_panics_on_path_like_input(
        rest in "[a-f0-9/.%{}:-]{0,120}",
        access in canary(),
    ) {
        let _ = edge::parse_route(&rest, &[], access);
    }

    /// Every valid generic route parses back to exactly its parts.
    #[test]
    fn generic_routes_round_trip(
        namespace in dimension().prop_filter("telemetry has its own form", |n| n != TELEMETRY),
        doc_type in dimension(),
        doc_version in dimension(),
        doc_id in doc_id(),
    ) {
        let rest = format!("{namespace}/{doc_type}/{doc_version}/{doc_id}");
        let route = edge::parse_route(&rest, &[], CanaryAccess::AsAnyOther)
            .map_err(|e| TestCaseError::fail(format!("{rest}: {e:?}")))?;
        prop_assert_eq!(route.namespace, namespace);
        prop_assert_eq!(route.doc_type, doc_type);
        prop_assert_eq!(route.doc_version, doc_version);
        prop_assert_eq!(route.doc_id, doc_id);
    }

    /// Every valid telemetry route parses back, with the fixed doc version.
    #[test]
    fn telemetry_routes_round_trip(
        doc_id in doc_id(),
        doc_type in dimension(),
        app in prop::array::uniform4(dimension()),
    ) {
        let [name, version, channel, build] = app;
        let rest = format!("{TELEMETRY}/{doc_id}/{doc_type}/{name}/{version}/{channel}/{build}");
        let route = edge::parse_route(&rest, &[], CanaryAccess::AsAnyOther)
            .map_err(|e| TestCaseError::fail(format!("{rest}: {e:?}")))?;
        prop_assert_eq!(route.namespace, TELEMETRY);
        prop_assert_eq!(route.doc_type, doc_type);
        prop_assert_eq!(route.doc_version, TELEMETRY_DOC_VERSION);
        prop_assert_eq!(route.doc_id, doc_id);
    }

    /// A namespace outside a non-empty allow-list is never accepted (404), whatever else the
    /// path holds.
    #[test]
    fn unlisted_namespaces_are_not_found(
        namespace in dimension(),
        allowed in prop::collection::vec(dimension(), 1..4),
        doc_id in doc_id(),
    ) {
        prop_assume!(!allowed.contains(&namespace));
        prop_assume!(namespace != wharf_queue::CANARY_NAMESPACE);
        let rest = format!("{namespace}/t/1/{doc_id}");
        prop_assert!(matches!(
            edge::parse_route(&rest, &allowed, CanaryAccess::AsAnyOther),
            Err(PathError::NotFound(_))
        ));
    }

    /// Any header values: the builder never panics, refuses exactly the requests whose stored
    /// headers are not UTF-8, and otherwise stores each stored header's text unchanged.
    #[test]
    fn attributes_never_panic_and_keep_header_text(
        headers in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "user-agent", "date", "x-debug-id", "x-source-tags", "dnt",
                    "x-forwarded-for", "x-unknown", "cookie",
                ]),
                prop::collection::vec(any::<u8>(), 0..40),
            ),
            0..8,
        ),
        drop_client_ip in any::<bool>(),
        query in proptest::option::of("[a-z0-9=&]{0,20}"),
    ) {
        let mut map = HeaderMap::new();
        for (name, bytes) in &headers {
            // Only bytes an HTTP parser lets through can reach the builder.
            if let Ok(value) = HeaderValue::from_bytes(bytes) {
                map.append(HeaderName::from_static(name), value);
            }
        }
        let target = match &query {
            Some(q) => format!("/submit/ns/t/1/x?{q}"),
            None => "/submit/ns/t/1/x".to_string(),
        };
        let uri: Uri = target.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let peer: SocketAddr = "192.0.2.7:5000".parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let meta = RequestMeta {
            method: &Method::POST,
            uri: &uri,
            version: Version::HTTP_11,
            headers: &map,
            peer: Some(peer),
            received_at: chrono::Utc::now(),
        };
        let stored = ["user-agent", "date", "x-debug-id", "x-source-tags", "dnt", "x-forwarded-for"];
        let skipped = |name: &str| drop_client_ip && name == "x-forwarded-for";
        let invalid = map.iter().any(|(name, value)| {
            stored.contains(&name.as_str())
                && !skipped(name.as_str())
                && std::str::from_utf8(value.as_bytes()).is_err()
        });
        match edge::attributes(&meta, drop_client_ip) {
            Err(header) => prop_assert!(invalid, "refused {header} though every stored header is UTF-8"),
            Ok(attributes) => {
                prop_assert!(!invalid, "accepted a stored header that is not UTF-8");
                for name in stored {
                    let attribute = name.replace('-', "_");
                    let values: Vec<&str> = map
                        .get_all(name)
                        .iter()
                        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
                        .collect();
                    if skipped(name) || values.is_empty() {
                        prop_assert!(!attributes.contains_key(&attribute));
                    } else {
                        prop_assert_eq!(&attributes[&attribute], &values.join(", "));
                    }
                }
                prop_assert!(!attributes.contains_key("cookie"));
                prop_assert_eq!(attributes.contains_key("remote_addr"), !drop_client_ip);
            }
        }
    }
}
