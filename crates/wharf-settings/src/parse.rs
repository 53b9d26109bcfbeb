//! Typed parsing of raw variable values that records every problem instead of stopping at the first.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::catalog;
use crate::{ConfigError, Problem, Role};

pub(crate) struct Parser<'a> {
    values: &'a BTreeMap<String, String>,
    role: Role,
    problems: Vec<Problem>,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(values: &'a BTreeMap<String, String>, role: Role) -> Self {
        Self {
            values,
            role,
            problems: Vec::new(),
        }
    }

    pub(crate) fn problem(&mut self, name: &str, message: impl Into<String>) {
        let example = catalog::find(name).map(|v| v.example).unwrap_or("");
        self.problems.push(Problem {
            variable: name.to_string(),
            message: message.into(),
            example: example.to_string(),
        });
    }

    pub(crate) fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() || self.role == Role::Inspect {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.problems))
        }
    }

    /// The given value, else the catalogue default; empty strings count as unset.
    fn raw(&self, name: &str) -> Option<String> {
        self.values
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .or_else(|| {
                catalog::find(name)
                    .and_then(|v| v.default)
                    .map(str::to_string)
            })
    }

    pub(crate) fn string(&mut self, name: &str) -> String {
        self.raw(name).unwrap_or_default()
    }

    pub(crate) fn optional(&mut self, name: &str) -> Option<String> {
        self.raw(name)
    }

    pub(crate) fn optional_url(&mut self, name: &str) -> Option<String> {
        let value = self.raw(name)?;
        match url::Url::parse(&value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(value),
            Ok(_) => {
                self.problem(name, "must be an http:// or https:// URL with a host");
                None
            }
            Err(e) => {
                self.problem(name, format!("is not a valid URL ({e})"));
                None
            }
        }
    }

    pub(crate) fn required_for(&mut self, name: &str, needed: bool) -> String {
        match self.raw(name) {
            Some(v) => v,
            None => {
                if needed {
                    self.problem(name, "is required but not set");
                }
                String::new()
            }
        }
    }

    /// A `tracing` filter directive (`info`, `warn,wharf_web=debug`), checked here so that a
    /// bad one is reported with every other problem rather than later, by the telemetry set-up.
    pub(crate) fn log_filter(&mut self, name: &str) -> String {
        let value = self.string(name);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&value) {
            self.problem(name, format!("`{value}` is not a log filter ({e})"));
        }
        value
    }

    /// A duration in milliseconds within `[min, max]`: zero or absurd values of timeouts and
    /// intervals make a role spin, hang or never recover, so they are refused at start-up.
    pub(crate) fn millis(&mut self, name: &str, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.within(name, min, max))
    }

    /// A whole number within `[min, max]`.
    pub(crate) fn within(&mut self, name: &str, min: u64, max: u64) -> u64 {
        let Some(value) = self.raw(name) else {
            return min;
        };
        match value.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.problem(
                    name,
                    format!("`{value}` is not a whole number from {min} to {max}"),
                );
                min
            }
        }
    }

    pub(crate) fn boolean(&mut self, name: &str) -> bool {
        let Some(value) = self.raw(name) else {
            return false;
        };
        match value.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => {
                self.problem(name, format!("`{value}` is not a boolean (true or false)"));
                false
            }
        }
    }

    pub(crate) fn list(&mut self, name: &str) -> Vec<String> {
        self.raw(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `*`, or a comma-separated list of origins (`scheme://host[:port]`, nothing after).
    pub(crate) fn origins(&mut self, name: &str) -> crate::CorsOrigins {
        let list = self.list(name);
        if list.iter().any(|o| o == "*") {
            if list.len() > 1 {
                self.problem(
                    name,
                    "`*` allows every origin and cannot be combined with others",
                );
            }
            return crate::CorsOrigins::Any;
        }
        let mut origins = Vec::new();
        for origin in list {
            match url::Url::parse(&origin) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.path() == "/"
                        && !origin.ends_with('/')
                        && u.query().is_none()
                        && u.username().is_empty() =>
                {
                    origins.push(u.origin().ascii_serialization())
                }
                _ => self.problem(
                    name,
                    format!("`{origin}` is not an origin (scheme://host[:port], no path)"),
                ),
            }
        }
        if origins.is_empty() {
            self.problem(name, "names no origin; use `*` to allow every origin");
            return crate::CorsOrigins::Any;
        }
        crate::CorsOrigins::List(origins)
    }

    pub(crate) fn choice<T: Copy>(&mut self, name: &str, options: &[(&str, T)], fallback: T) -> T {
        let Some(value) = self.raw(name) else {
            return fallback;
        };
        match options.iter().find(|(k, _)| k.eq_ignore_ascii_case(&value)) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<&str> = options.iter().map(|(k, _)| *k).collect();
                self.problem(
                    name,
                    format!("`{value}` is not one of {}", names.join(", ")),
                );
                fallback
            }
        }
    }
}
