//! The queue entry: one accepted submission as a stream entry (raw body, compact attributes, schema version) and its strict decoding.
//!
//! Layout of one entry in `wharf:{<n>}:submissions` (field names are stored once per stream
//! node by Redis, since every entry has the same fields in the same order):
//!
//! | field  | value |
//! |--------|-------|
//! | `v`    | schema version, `2` |
//! | `ns`, `dt`, `dv`, `id` | namespace, docType, docVersion, docId from the URL |
//! | `at`   | the edge-spec attributes, one JSON object of strings |
//! | `body` | the body, byte for byte as received (no base64 inside Redis) |
//!
//! Rolling deploys: a worker dead-letters an entry whose version it does not know (with the
//! reason), so ship workers that read a new version before web nodes that write it.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::QueueError;

/// The schema version this build writes and the only one it reads.
pub const SCHEMA_VERSION: u32 = 2;

/// Where the submission was addressed, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub namespace: String,
    pub doc_type: String,
    pub doc_version: String,
    pub doc_id: String,
}

/// One accepted submission, as it travels from web to worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub route: Route,
    /// Edge-spec message attributes; absent headers are absent keys, never empty strings.
    pub attributes: BTreeMap<String, String>,
    /// The body exactly as received.
    pub body: Bytes,
}

/// Why a stream entry cannot be a submission; the entry goes to dead letters with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Poison {
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{0}` is not UTF-8")]
    NotUtf8(&'static str),
    #[error("schema version `{0}` is not {SCHEMA_VERSION}; a worker that knows it must read it (redrive after upgrading)")]
    Version(String),
    #[error("attributes are not a JSON object of strings: {0}")]
    Attributes(String),
    #[error("field `{0}` appears twice")]
    Duplicate(String),
    #[error("the entry has an odd number of field names and values")]
    Shape,
}

impl Submission {
    pub fn new(route: Route, attributes: BTreeMap<String, String>, body: Bytes) -> Self {
        Self {
            route,
            attributes,
            body,
        }
    }

    /// `XADD <stream> * <fields>`, its buffer sized once: growing it argument by argument
    /// reallocated and copied the body several times per submission.
    pub fn xadd(&self, stream: &str) -> Result<redis::Cmd, QueueError> {
        let attributes = serde_json::to_vec(&self.attributes)?;
        let route = &self.route;
        let data = stream.len()
            + 64
            + route.namespace.len()
            + route.doc_type.len()
            + route.doc_version.len()
            + route.doc_id.len()
            + attributes.len()
            + self.body.len();
        let mut cmd = redis::Cmd::with_capacity(17, data);
        cmd.arg("XADD").arg(stream).arg("*");
        self.write_fields(&mut cmd, &attributes);
        Ok(cmd)
    }

    fn write_fields(&self, cmd: &mut redis::Cmd, attributes: &[u8]) {
        cmd.arg("v")
            .arg(SCHEMA_VERSION)
            .arg("ns")
            .arg(&self.route.namespace)
            .arg("dt")
            .arg(&self.route.doc_type)
            .arg("dv")
            .arg(&self.route.doc_version)
            .arg("id")
            .arg(&self.route.doc_id)
            .arg("at")
            .arg(attributes)
            .arg("body")
            .arg(self.body.as_ref());
    }

    /// About the bytes this entry adds to a Redis request.
    pub fn encoded_len(&self) -> usize {
        let attributes: usize = self
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum();
        self.body.len() + attributes + 128
    }

    /// Decodes a stream entry's field/value pairs, refusing anything but a complete entry of
    /// this schema version.
    pub fn decode(fields: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Self, Poison> {
        let mut v = None;
        let mut ns = None;
        let mut dt = None;
        let mut dv = None;
        let mut id = None;
        let mut at = None;
        let mut body = None;
        for (name, value) in fields {
            let slot = match name.as_slice() {
                b"v" => &mut v,
                b"ns" => &mut ns,
                b"dt" => &mut dt,
                b"dv" => &mut dv,
                b"id" => &mut id,
                b"at" => &mut at,
                b"body" => &mut body,
                // Unknown fields are tolerated: a later minor change may add one.
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(Poison::Duplicate(
                    String::from_utf8_lossy(&name).into_owned(),
                ));
            }
        }
        let text = |value: Option<Vec<u8>>, name: &'static str| -> Result<String, Poison> {
            let value = value.ok_or(Poison::Missing(name))?;
            String::from_utf8(value).map_err(|_| Poison::NotUtf8(name))
        };
        let version = text(v, "v")?;
        if version != SCHEMA_VERSION.to_string() {
            return Err(Poison::Version(version.chars().take(16).collect()));
        }
        let route = Route {
            namespace: text(ns, "ns")?,
            doc_type: text(dt, "dt")?,
            doc_version: text(dv, "dv")?,
            doc_id: text(id, "id")?,
        };
        let attributes: BTreeMap<String, String> =
            serde_json::from_slice(&at.ok_or(Poison::Missing("at"))?)
                .map_err(|e| Poison::Attributes(e.to_string()))?;
        let body = Bytes::from(body.ok_or(Poison::Missing("body"))?);
        Ok(Self {
            route,
            attributes,
            body,
        })
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

    /// The field/value pairs `xadd` writes, as Redis would hand them back.
    fn fields_of(sub: &Submission) -> Vec<(Vec<u8>, Vec<u8>)> {
        let cmd = sub.xadd("wharf:{0}:submissions").unwrap();
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(&args[..3], [&b"XADD"[..], b"wharf:{0}:submissions", b"*"]);
        args[3..]
            .chunks(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect()
    }

    #[test]
    fn round_trips_arbitrary_bytes() {
        let body: Vec<u8> = (0..=255u8).collect();
        let mut attributes = BTreeMap::new();
        attributes.insert("uri".to_string(), "/submit/ns/t/1/x?\"q\"".to_string());
        let sub = Submission::new(route(), attributes, Bytes::from(body));
        assert_eq!(Submission::decode(fields_of(&sub)).unwrap(), sub);
    }

    #[test]
    fn refuses_other_versions_missing_fields_and_bad_attributes() {
        let sub = Submission::new(route(), BTreeMap::new(), Bytes::from_static(b"x"));
        let good = fields_of(&sub);

        let mut newer = good.clone();
        newer[0].1 = b"3".to_vec();
        assert!(matches!(Submission::decode(newer), Err(Poison::Version(_))));

        let missing: Vec<_> = good.iter().filter(|(k, _)| k != b"body").cloned().collect();
        assert_eq!(Submission::decode(missing), Err(Poison::Missing("body")));

        let mut bad_at = good.clone();
        bad_at[5].1 = b"{\"a\": 1}".to_vec();
        assert!(matches!(
            Submission::decode(bad_at),
            Err(Poison::Attributes(_))
        ));

        let mut twice = good.clone();
        twice.push((b"id".to_vec(), b"other".to_vec()));
        assert!(matches!(
            Submission::decode(twice),
            Err(Poison::Duplicate(_))
        ));

        let garbage = vec![(vec![0xff, 0xfe], vec![0, 1, 2])];
        assert_eq!(Submission::decode(garbage), Err(Poison::Missing("v")));
    }
}
