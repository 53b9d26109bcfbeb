//! Hides credentials and query strings inside URLs before they reach a log, an error or `wharf config`.

/// What replaces text that is hidden whole.
pub const REDACTED: &str = "[redacted]";

/// What replaces a hidden part of a URL: a word a URL can hold without escaping.
const HIDDEN: &str = "redacted";

/// `url` with its user name, password, query string and fragment each replaced by `redacted`.
///
/// Presigned URLs carry their signature in the query, and `https://user:pass@host/` URLs their
/// password in the authority: both are as secret as a password. Text that does not parse as a
/// URL is hidden whole, since nothing says which part of it is safe to show.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return REDACTED.to_string();
    };
    if !parsed.username().is_empty() {
        let _ = parsed.set_username(HIDDEN);
    }
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(HIDDEN));
    }
    if parsed.query().is_some() {
        parsed.set_query(Some(HIDDEN));
    }
    if parsed.fragment().is_some() {
        parsed.set_fragment(Some(HIDDEN));
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_queries_are_hidden_and_the_rest_kept() {
        let shown = redact_url(
            "https://wharf:hunter2@config.example.com:8443/wharf.json?X-Amz-Signature=abc123#frag",
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("abc123"), "{shown}");
        assert!(!shown.contains("frag"), "{shown}");
        assert!(
            shown.contains("config.example.com:8443/wharf.json"),
            "{shown}"
        );
        assert_eq!(
            redact_url("file:///etc/wharf/config.json"),
            "file:///etc/wharf/config.json"
        );
        assert_eq!(redact_url("not a url with s3cret"), REDACTED);
    }
}
