//! The submission job: one accepted request, its edge-spec attributes and its body, versioned for rolling deploys.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::QueueError;

/// The schema version this build writes and the newest it reads.
///
/// Rolling deploys: a new version must first ship in workers that read it, and only then in web
/// nodes that write it. A worker that meets a newer version fails the job, which is retried (and
/// picked up by an upgraded worker) rather than lost.
pub const SCHEMA_VERSION: u32 = 1;

/// Where the submission was addressed, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub namespace: String,
    pub doc_type: String,
    pub doc_version: String,
    pub doc_id: String,
}

/// One accepted submission, as it travels from web to worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    pub v: u32,
    pub route: Route,
    /// Edge-spec message attributes; absent headers are absent keys, never empty strings.
    pub attributes: BTreeMap<String, String>,
    /// The body exactly as received, base64 encoded (standard alphabet, padded).
    pub data: String,
}

impl Submission {
    pub fn new(route: Route, attributes: BTreeMap<String, String>, body: &[u8]) -> Self {
        Self {
            v: SCHEMA_VERSION,
            route,
            attributes,
            data: base64::engine::general_purpose::STANDARD.encode(body),
        }
    }

    pub fn to_json(&self) -> Result<Vec<u8>, QueueError> {
        // Sized up front: growing from serde_json's default took several reallocations and
        // copies of the body per submission.
        let mut json = Vec::with_capacity(self.json_size_hint());
        serde_json::to_writer(&mut json, self)?;
        Ok(json)
    }

    /// About the size of this submission as JSON (a little over, unless values need escaping).
    pub fn json_size_hint(&self) -> usize {
        let attributes: usize = self
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum();
        self.data.len() + attributes + 256
    }

    /// Decodes a job, refusing versions newer than this build understands.
    pub fn from_json(bytes: &[u8]) -> Result<Self, QueueError> {
        let job: Submission = serde_json::from_slice(bytes)?;
        if job.v > SCHEMA_VERSION {
            return Err(QueueError::UnsupportedVersion {
                found: job.v,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(job)
    }

    /// The body bytes exactly as received.
    pub fn body(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route {
            namespace: "ns".into(),
            doc_type: "t".into(),
            doc_version: "1".into(),
            doc_id: "2c3a0767-d84a-4d02-8a92-fa54a3376049".into(),
        }
    }

    #[test]
    fn round_trips_arbitrary_bytes() {
        let body: Vec<u8> = (0..=255u8).collect();
        let job = Submission::new(route(), BTreeMap::new(), &body);
        let back = Submission::from_json(&job.to_json().unwrap()).unwrap();
        assert_eq!(back.body().unwrap(), body);
        assert_eq!(back, job);
    }

    #[test]
    fn refuses_newer_schema_versions() {
        let mut job = Submission::new(route(), BTreeMap::new(), b"x");
        job.v = SCHEMA_VERSION + 1;
        let err = Submission::from_json(&serde_json::to_vec(&job).unwrap()).unwrap_err();
        assert!(matches!(err, QueueError::UnsupportedVersion { .. }));
    }
}
