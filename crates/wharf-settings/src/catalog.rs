//! Every environment variable Wharf reads, as the settings structs declare them: names, roles, defaults, bounds and meanings, and the configuration table printed from them.

use std::fmt::Write as _;
use std::sync::LazyLock;

/// Which role reads a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read by both `web` and `worker`.
    Both,
    /// Read by `web` only.
    Web,
    /// Read by `worker` (and the tools that use S3: `canary`, `landed`).
    Worker,
}

impl Scope {
    /// The word the configuration table's role column shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Both => "both",
            Scope::Web => "web",
            Scope::Worker => "worker",
        }
    }
}

/// What a variable's value must be; the parser checks it, and the table states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any text, surrounding blanks trimmed; empty counts as unset.
    Text,
    /// A whole number within the bounds.
    Int {
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// Milliseconds within the bounds.
    Millis {
        /// Shortest accepted duration, in milliseconds.
        min: u64,
        /// Longest accepted duration, in milliseconds.
        max: u64,
    },
    /// `true`/`false`, also `1`/`0`, `yes`/`no` or `on`/`off`, in any case.
    Bool,
    /// Comma-separated, blanks dropped.
    List,
    /// An `http://` or `https://` URL with a host.
    Url,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// `*` or a list of `scheme://host[:port]` origins.
    Origins,
    /// A `tracing` filter directive.
    LogFilter,
}

/// When a variable must be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// Unset is never a problem: the default applies, if there is one.
    Never,
    /// By every command that talks to Redis.
    ForRedis,
    /// By every command that talks to S3.
    ForS3,
}

/// One environment variable: everything the parser, `wharf config --list` and the README say of it.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// The environment variable's name, which is also its key in the `CONFIG_URL` document.
    pub name: &'static str,
    /// Which role reads it: the table's role column.
    pub scope: Scope,
    /// `None` means unset by default (optional, or required where `required` says so).
    pub default: Option<&'static str>,
    /// What the value must be; the parser enforces it and the table shows its bounds.
    pub kind: Kind,
    /// When an unset value is a problem.
    pub required: Required,
    /// The table marks the variable secret (its field's type is what hides the value).
    pub secret: bool,
    /// Every deployment must set it although the code has a default: the deploy contract
    /// (tests/deploy/env_vars.txt) marks it required, and the deploy tests hold each deploy to it.
    pub set_by_deploys: bool,
    /// A valid value, shown as `NAME=example` in a problem's message (the tests check it parses).
    pub example: &'static str,
    /// The meaning, a lowercase phrase: the table's meaning column before the bounds, and the
    /// settings field's documentation.
    pub help: &'static str,
}

impl Variable {
    /// The same variable, required whenever the command needs `when`.
    pub const fn required(mut self, when: Required) -> Self {
        self.required = when;
        self
    }

    /// The same variable, marked secret in the configuration table; what hides the value from
    /// `wharf config` and `Debug` is the field's type, [`crate::Secret`].
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// The same variable, required of every deployment (`ENVIRONMENT` names the deployment in
    /// Sentry and logs; `STATSD_HOST` is where its metrics go) though the code runs without it.
    pub const fn set_by_deploys(mut self) -> Self {
        self.set_by_deploys = true;
        self
    }

    /// Whether every deployment must set it: the code requires it, or deployments must.
    pub fn deploys_must_set(&self) -> bool {
        self.set_by_deploys || self.required != Required::Never
    }

    /// The meaning as the table shows it: the help, then the bounds or choices the parser
    /// enforces, then whether `wharf config` hides it.
    pub fn meaning(&self) -> String {
        let mut text = self.help.to_string();
        match self.kind {
            Kind::Int { min, max } | Kind::Millis { min, max } => {
                let _ = write!(text, " ({min} to {max})");
            }
            Kind::Choice(options) => {
                let _ = write!(text, " (one of {})", options.join(", "));
            }
            _ => {}
        }
        if self.secret {
            text.push_str(" (secret, redacted by `wharf config`)");
        }
        text
    }

    fn default_cell(&self) -> String {
        match (self.required, self.default) {
            (Required::ForRedis | Required::ForS3, _) => "*required*".into(),
            (_, None) => "unset".into(),
            (_, Some("")) => "empty".into(),
            (_, Some(value)) => format!("`{value}`"),
        }
    }
}

/// Builds a [`Variable`]; the settings structs declare theirs with these.
pub const fn var(
    name: &'static str,
    scope: Scope,
    kind: Kind,
    default: Option<&'static str>,
    example: &'static str,
    help: &'static str,
) -> Variable {
    Variable {
        name,
        scope,
        default,
        kind,
        required: Required::Never,
        set_by_deploys: false,
        secret: false,
        example,
        help,
    }
}

/// Every variable, in the order the settings structs declare them (the README's order).
pub fn variables() -> &'static [Variable] {
    static ALL: LazyLock<Vec<Variable>> = LazyLock::new(|| {
        let mut all = Vec::new();
        crate::Settings::variables(&mut all);
        all
    });
    &ALL
}

/// Looks a variable up by name.
pub fn find(name: &str) -> Option<&'static Variable> {
    variables().iter().find(|v| v.name == name)
}

/// The configuration table (Markdown), as the README holds it and `wharf config --list` prints it.
pub fn markdown_table() -> String {
    let mut out = String::from("| variable | role | default | meaning |\n|---|---|---|---|\n");
    for v in variables() {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            v.name,
            v.scope.as_str(),
            v.default_cell(),
            v.meaning()
        );
    }
    out
}

/// The deploy contract, tests/deploy/env_vars.txt: one line per variable, `NAME ROLE
/// required|optional`, which the deploy tests check CloudFormation, Kubernetes and compose
/// against. Made from the declarations like the README's table.
pub fn deploy_contract() -> String {
    let mut out = String::from(
        "# Wharf environment variables, one per line: NAME ROLE required|optional. Generated from the\n\
         # settings declarations (crates/wharf-settings/src/lib.rs): do not edit; run\n\
         # `WHARF_BLESS=1 cargo test -p wharf-settings generated` after changing a setting.\n\
         # ROLE is web, worker or both. \"required\" = must be set by every deployment (CloudFormation\n\
         # user data, Kubernetes manifests, docker-compose.yml); tests/deploy/test_env_vars.py checks\n\
         # the deploy files against this list.\n",
    );
    for v in variables() {
        let need = if v.deploys_must_set() {
            "required"
        } else {
            "optional"
        };
        let _ = writeln!(out, "{} {} {need}", v.name, v.scope.as_str());
    }
    out.push_str("# Read by the AWS SDK itself (its credential and region chain), not by Wharf's settings.\n");
    out.push_str("AWS_REGION worker optional\n");
    out
}
