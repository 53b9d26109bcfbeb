//! The Dockerflow version object: `/app/version.json` when present, else values compiled into the binary.

use serde::{Deserialize, Serialize};

/// The repository URL, from the workspace's `[workspace.package]`.
const SOURCE: &str = env!("CARGO_PKG_REPOSITORY");

// Cargo leaves the variable empty, rather than failing, in a crate whose manifest does not take
// `repository` from the workspace; `__version__` would then serve `"source": ""`.
const _: () = assert!(
    !SOURCE.is_empty(),
    "wharf-web's Cargo.toml needs `repository.workspace = true`"
);

/// The fields Dockerflow's version object requires.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionInfo {
    /// URL of the source repository (the workspace's `repository` when built in).
    pub source: String,
    /// The release: the crate version when built in.
    pub version: String,
    /// The git commit: when built in, `WHARF_GIT_COMMIT` at compile time, or `unknown`.
    pub commit: String,
    /// A link to the CI build that made the image; empty when built in.
    pub build: String,
}

impl VersionInfo {
    /// Values known at compile time: the crate version and the git commit when the build could read it.
    pub fn compiled() -> Self {
        Self {
            source: SOURCE.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            commit: option_env!("WHARF_GIT_COMMIT")
                .unwrap_or("unknown")
                .to_string(),
            build: String::new(),
        }
    }

    /// Reads the version file, falling back to [`VersionInfo::compiled`] if it is missing or unreadable.
    pub fn load(path: &str) -> Self {
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<VersionInfo>(&bytes) {
                Ok(info) => info,
                Err(e) => {
                    tracing::warn!(type = "version.invalid", path, error = %e, "version file is not a valid version object; using built-in values");
                    Self::compiled()
                }
            },
            Err(_) => Self::compiled(),
        }
    }
}
