//! Fetches the `CONFIG_URL` JSON document whose keys supply defaults for the environment variables.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::redact::redact_url;

/// Why `CONFIG_URL` could not be used; the process stops on any of these.
#[derive(Debug, thiserror::Error)]
///
/// Every `url` field holds the URL as [`redact_url`] shows it: without credentials or query (a
/// presigned URL's signature), so the error can be logged.
pub enum ConfigUrlError {
    /// The URL does not parse, or a `file://` URL names no local path.
    #[error("`{url}` is not a valid URL: {reason}")]
    BadUrl {
        /// The URL, redacted.
        url: String,
        /// The URL parser's complaint.
        reason: String,
    },
    /// The scheme is none of `file`, `http` and `https`.
    #[error("`{url}` uses an unsupported scheme (use file://, http:// or https://)")]
    Scheme {
        /// The URL, redacted.
        url: String,
    },
    /// The file could not be read, or the HTTP request failed, timed out or got a non-2xx status.
    #[error("could not read `{url}`: {reason}")]
    Unreachable {
        /// The URL, redacted.
        url: String,
        /// The I/O or HTTP error, or the status received.
        reason: String,
    },
    /// The document is not JSON, not an object, has an object as a value, or sets `CONFIG_URL`.
    #[error("`{url}` is not a JSON object of variable names to values: {reason}")]
    Invalid {
        /// The URL, redacted.
        url: String,
        /// What is wrong with the document.
        reason: String,
    },
}

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the JSON object behind `url` into variable name -> value strings.
pub(crate) fn fetch_defaults(url: &str) -> Result<BTreeMap<String, String>, ConfigUrlError> {
    // Errors name the URL without its credentials or query (a presigned URL's signature).
    let parsed = url::Url::parse(url).map_err(|e| ConfigUrlError::BadUrl {
        url: redact_url(url),
        reason: e.to_string(),
    })?;
    let body = match parsed.scheme() {
        "file" => {
            let path = parsed.to_file_path().map_err(|()| ConfigUrlError::BadUrl {
                url: redact_url(url),
                reason: "not a local file path".into(),
            })?;
            std::fs::read_to_string(&path).map_err(|e| ConfigUrlError::Unreachable {
                url: redact_url(url),
                reason: e.to_string(),
            })?
        }
        "http" | "https" => fetch_http(url)?,
        _ => {
            return Err(ConfigUrlError::Scheme {
                url: redact_url(url),
            })
        }
    };
    parse_document(url, &body)
}

fn fetch_http(url: &str) -> Result<String, ConfigUrlError> {
    let unreachable = |reason: String| ConfigUrlError::Unreachable {
        url: redact_url(url),
        reason,
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| unreachable(e.without_url().to_string()))?;
    let response = client
        .get(url)
        .send()
        .map_err(|e| unreachable(e.without_url().to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(unreachable(format!("HTTP status {status}")));
    }
    response
        .text()
        .map_err(|e| unreachable(e.without_url().to_string()))
}

fn parse_document(url: &str, body: &str) -> Result<BTreeMap<String, String>, ConfigUrlError> {
    let invalid = |reason: String| ConfigUrlError::Invalid {
        url: redact_url(url),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| invalid(e.to_string()))?;
    let serde_json::Value::Object(fields) = value else {
        return Err(invalid("the document is not a JSON object".into()));
    };
    let mut values = BTreeMap::new();
    for (key, v) in fields {
        let name = key.to_ascii_uppercase();
        if name == "CONFIG_URL" {
            return Err(invalid(
                "CONFIG_URL cannot point to another CONFIG_URL".into(),
            ));
        }
        let text = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Null => continue,
            serde_json::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            serde_json::Value::Object(_) => {
                return Err(invalid(format!(
                    "`{key}` must be a string, number or boolean"
                )))
            }
        };
        values.insert(name, text);
    }
    Ok(values)
}
