//! Typed parsing of raw variable values by their catalogue entry, recording every problem instead of stopping at the first.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::catalog::{self, Kind, Required, Variable};
use crate::{ConfigError, CorsOrigins, Needs, Problem, Secret};

pub(crate) struct Parser<'a> {
    values: &'a BTreeMap<String, String>,
    needs: Needs,
    problems: Vec<Problem>,
}

/// A settings field's type: how it is read from its variable's raw value.
pub(crate) trait FromValue: Sized {
    fn from_value(p: &mut Parser<'_>, v: &Variable) -> Self;
}

/// An enum chosen by name (`LOG_FORMAT`, `OUTPUT_COMPRESSION`).
pub(crate) trait Choice: Sized + Copy + 'static {
    const OPTIONS: &'static [(&'static str, Self)];
}

impl<'a> Parser<'a> {
    pub(crate) fn new(values: &'a BTreeMap<String, String>, needs: Needs) -> Self {
        Self {
            values,
            needs,
            problems: Vec::new(),
        }
    }

    pub(crate) fn needs(&self) -> Needs {
        self.needs
    }

    /// The field of type `T` that `v` describes.
    pub(crate) fn get<T: FromValue>(&mut self, v: &Variable) -> T {
        T::from_value(self, v)
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
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.problems))
        }
    }

    /// The given value, else the default; empty strings count as unset. A required variable
    /// left unset is a problem when the command needs what it is for.
    fn raw(&mut self, v: &Variable) -> Option<String> {
        let value = self
            .values
            .get(v.name)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| v.default.map(str::to_string));
        let needed = match v.required {
            Required::Never => false,
            Required::ForRedis => self.needs.redis,
            Required::ForS3 => self.needs.s3,
        };
        if value.is_none() && needed {
            self.problem(v.name, "is required but not set");
        }
        value
    }

    /// A whole number within the variable's bounds (its minimum when unset or wrong).
    fn number(&mut self, v: &Variable) -> u64 {
        let (min, max) = match v.kind {
            Kind::Int { min, max } | Kind::Millis { min, max } => (min, max),
            _ => (0, u64::MAX),
        };
        let Some(value) = self.raw(v) else {
            return min;
        };
        match value.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.problem(
                    v.name,
                    format!("`{value}` is not a whole number from {min} to {max}"),
                );
                min
            }
        }
    }

    fn url(&mut self, v: &Variable) -> Option<String> {
        let value = self.raw(v)?;
        match url::Url::parse(&value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(value),
            Ok(_) => {
                self.problem(v.name, "must be an http:// or https:// URL with a host");
                None
            }
            Err(e) => {
                self.problem(v.name, format!("is not a valid URL ({e})"));
                None
            }
        }
    }
}

impl FromValue for String {
    fn from_value(p: &mut Parser<'_>, v: &Variable) -> Self {
        let value = p.raw(v).unwrap_or_default();
        // Checked here, so that a bad filter is reported with every other problem rather than
        // later, by the telemetry set-up.
        if v.kind == Kind::LogFilter {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(&value) {
                p.problem(v.name, format!("`{value}` is not a log filter ({e})"));
            }
        }
        value
    }
}

impl FromValue for Option<String> {
    fn from_value(p: &mut Parser<'_>, v: &Variable) -> Self {
        match v.kind {
            Kind::Url => p.url(v),
            _ => p.raw(v),
        }
    }
}

impl FromValue for Option<Secret> {
    fn from_value(p: &mut Parser<'_>, v: &Variable) -> Self {
        Option::<String>::from_value(p, v).map(Secret::new)
    }
}

macro_rules! from_number {
    ($($ty:ty),*) => {$(
        impl FromValue for $ty {
            fn from_value(p: &mut Parser<'_>, v: &Variable) -> Self {
                let n = p.number(v);
                <$ty>::try_from(n).unwrap_or(<$ty>::MAX)
            }
        }
    )*};
}
from_number!(u8, u16, u32, u64, usize, i64);

/// Zero or absurd timeouts and intervals make a role spin, hang or never recover, so every
/// duration has bounds, refused at start-up.
impl FromValue for Duration {
    fn from_value(p: &mut Parser<'_>, v: &Variable) -> Self {
        Duration::from_millis(p.number(v))
    }
}

impl FromValue for bool {
    fn from_value(p: &mut Parser<'_>, v: &Variable) -> Self {
        let Some(value) = p.raw(v) else {
            return false;
        };
        match value.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => {
                p.problem(
                    v.name,
                    format!("`{value}` is not a boolean (true or false)"),
                );
                false
            }
        }
    }
}

impl FromValue for Vec<String> {
    fn from_value(p: &mut Parser<'_>, v: &Variable) -> Self {
        p.raw(v)
            .map(|value| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl<T: Choice> FromValue for T {
    fn from_value(p: &mut Parser<'_>, v: &Variable) -> Self {
        let fallback = T::OPTIONS[0].1;
        let Some(value) = p.raw(v) else {
            return fallback;
        };
        match T::OPTIONS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&value))
        {
            Some((_, choice)) => *choice,
            None => {
                let names: Vec<&str> = T::OPTIONS.iter().map(|(k, _)| *k).collect();
                p.problem(
                    v.name,
                    format!("`{value}` is not one of {}", names.join(", ")),
                );
                fallback
            }
        }
    }
}

impl FromValue for CorsOrigins {
    /// `*`, or a comma-separated list of origins (`scheme://host[:port]`, nothing after).
    fn from_value(p: &mut Parser<'_>, v: &Variable) -> Self {
        let list = Vec::<String>::from_value(p, v);
        if list.iter().any(|o| o == "*") {
            if list.len() > 1 {
                p.problem(
                    v.name,
                    "`*` allows every origin and cannot be combined with others",
                );
            }
            return CorsOrigins::Any;
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
                _ => p.problem(
                    v.name,
                    format!("`{origin}` is not an origin (scheme://host[:port], no path)"),
                ),
            }
        }
        if origins.is_empty() {
            p.problem(v.name, "names no origin; use `*` to allow every origin");
            return CorsOrigins::Any;
        }
        CorsOrigins::List(origins)
    }
}
