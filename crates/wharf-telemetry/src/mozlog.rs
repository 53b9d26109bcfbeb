//! A tracing layer that writes each event as one MozLog JSON line on stdout.
//!
//! Format (Dockerflow's mozlog.md): `Timestamp` (ns), `Type`, `Logger`, `Hostname`, `EnvVersion`
//! "2.0", `Severity` (syslog level), `Pid`, and flat `Fields`.
//!
//! `Type` is what dashboards and alerts select lines by, so it must not change when a dependency
//! moves a module (docs/operations.md, "Logging"):
//! - an event's `type` field becomes `Type` (dotted names such as `request.summary`); every event
//!   Wharf's own code raises has one;
//! - an event from a library gets `lib.<family>`, the family being the first word of its crate's
//!   name (`aws_smithy_runtime` and `aws_sdk_s3` give `lib.aws`, `apalis_core` gives
//!   `lib.apalis`, `hyper_util` gives `lib.hyper`), and its module path moves to the `target`
//!   field. Records of crates that log through the `log` crate (redis, rustls) arrive with the
//!   target `log` and their own in a `log.target` field, which is used instead;
//! - an event of Wharf's own without a `type` keeps its module path, which points at the call
//!   site to fix.

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Writes MozLog lines to a sink (stdout in production, a buffer in tests).
pub struct MozLogLayer<W> {
    logger: String,
    hostname: String,
    pid: u32,
    make_writer: W,
}

impl<W, O> MozLogLayer<W>
where
    W: Fn() -> O + Send + Sync + 'static,
    O: Write,
{
    /// A layer with `Logger` = `{app}-{role}`; `make_writer` gives the sink for each line.
    pub fn new(app: &str, role: &str, make_writer: W) -> Self {
        Self {
            logger: format!("{app}-{role}"),
            hostname: hostname(),
            pid: std::process::id(),
            make_writer,
        }
    }

    /// Renders one event as a MozLog line (with its newline) into `scratch.line`.
    ///
    /// Written straight into a reused buffer rather than through a `serde_json::Value` map: this
    /// runs once per request (`request.summary`), and the map cost a dozen allocations per line.
    fn render(&self, event: &Event<'_>, scratch: &mut Scratch) {
        let Scratch { line, fields } = scratch;
        fields.clear();
        let target = event.metadata().target();
        let own = is_own(target);
        let mut visitor = FieldWriter {
            out: fields,
            takes_type: own,
            kind: None,
            log_target: None,
            empty: true,
        };
        event.record(&mut visitor);
        let kind = if own {
            visitor.kind
        } else if let (LOG_TARGET, Some(origin)) = (target, &visitor.log_target) {
            Some(library_type(origin))
        } else {
            visitor.put_str("target", target);
            Some(library_type(target))
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or_default();

        line.clear();
        line.extend_from_slice(b"{\"Timestamp\":");
        push_json(line, &timestamp);
        line.extend_from_slice(b",\"Type\":");
        match &kind {
            Some(kind) => push_json(line, kind),
            None => push_json(line, target),
        }
        line.extend_from_slice(b",\"Logger\":");
        push_json(line, &self.logger);
        line.extend_from_slice(b",\"Hostname\":");
        push_json(line, &self.hostname);
        line.extend_from_slice(b",\"EnvVersion\":\"2.0\",\"Severity\":");
        push_json(line, &severity(*event.metadata().level()));
        line.extend_from_slice(b",\"Pid\":");
        push_json(line, &self.pid);
        line.extend_from_slice(b",\"Fields\":{");
        line.extend_from_slice(fields);
        line.extend_from_slice(b"}}\n");
    }
}

/// Per-thread buffers reused from one line to the next.
#[derive(Default)]
struct Scratch {
    line: Vec<u8>,
    fields: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Appends `value` as JSON. Serializing these scalars and strings into a `Vec` cannot fail.
fn push_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(out, value);
}

impl<S, W, O> Layer<S> for MozLogLayer<W>
where
    S: Subscriber,
    W: Fn() -> O + Send + Sync + 'static,
    O: Write,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // One write per line so concurrent events never interleave within a line.
        let written = SCRATCH.try_with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                self.render(event, &mut scratch);
                let _ = (self.make_writer)().write_all(&scratch.line);
            }
            // An event raised while this thread is already writing one (by the writer itself).
            Err(_) => self.render_fresh(event),
        });
        if written.is_err() {
            // The thread is exiting and its buffers are gone.
            self.render_fresh(event);
        }
    }
}

impl<W, O> MozLogLayer<W>
where
    W: Fn() -> O + Send + Sync + 'static,
    O: Write,
{
    fn render_fresh(&self, event: &Event<'_>) {
        let mut scratch = Scratch::default();
        self.render(event, &mut scratch);
        let _ = (self.make_writer)().write_all(&scratch.line);
    }
}

/// The target `tracing-log` gives records of the `log` crate; their own is in [`LOG_TARGET_FIELD`].
const LOG_TARGET: &str = "log";
const LOG_TARGET_FIELD: &str = "log.target";

/// Whether `target` is in one of Wharf's crates (`wharf`, `wharf_web`, ...).
fn is_own(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or_default();
    krate == "wharf" || krate.starts_with("wharf_")
}

/// `lib.<family>` for an event a library raised at `target`.
///
/// The family is the first word of the crate name, so one dependency split over several crates
/// (aws_config, aws_runtime, aws_smithy_*, aws_sdk_*) is one Type, and a Type survives the
/// library moving code between its modules or crates.
fn library_type(target: &str) -> String {
    let krate = target.split("::").next().unwrap_or_default();
    let family = krate
        .split(['_', '-', '.'])
        .next()
        .filter(|f| !f.is_empty())
        .unwrap_or("unknown");
    format!("lib.{}", family.to_ascii_lowercase())
}

/// Syslog severities, as MozLog wants them.
fn severity(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// This host's name, the one every log line's `Hostname` and every worker name carry:
/// `HOSTNAME` (the pod's name under Kubernetes, the container's under Docker, and what a test
/// sets), else the kernel's, else `unknown`.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Writes an event's fields as the members of one flat JSON object (MozLog forbids nesting).
struct FieldWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Whether a `type` field becomes the line's `Type` rather than a field: only Wharf's own
    /// events name their Type; a library's `type` field means whatever that library meant.
    takes_type: bool,
    /// The event's `type` field, when it is taken.
    kind: Option<String>,
    /// The `log` crate's target of a record `tracing-log` forwarded (still written as a field).
    log_target: Option<String>,
    empty: bool,
}

impl FieldWriter<'_> {
    fn key(&mut self, field: &Field) {
        let name = match field.name() {
            "message" => "msg",
            other => other,
        };
        self.name(name);
    }

    fn name(&mut self, name: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        push_json(self.out, name);
        self.out.push(b':');
    }

    fn put<T: Serialize + ?Sized>(&mut self, field: &Field, value: &T) {
        self.key(field);
        push_json(self.out, value);
    }

    /// A field the layer adds itself, after the event's own.
    fn put_str(&mut self, name: &str, value: &str) {
        self.name(name);
        push_json(self.out, value);
    }
}

impl Visit for FieldWriter<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.takes_type && field.name() == "type" {
            self.kind = Some(format!("{value:?}"));
            return;
        }
        self.key(field);
        push_json(self.out, &format_args!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.takes_type && field.name() == "type" {
            self.kind = Some(value.to_string());
            return;
        }
        if !self.takes_type && field.name() == LOG_TARGET_FIELD {
            self.log_target = Some(value.to_string());
        }
        self.put(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, &value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, &value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, &value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, &value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        push_json(self.out, &format_args!("{value}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut b) = self.0.lock() {
                b.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_become_flat_mozlog_lines() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let layer = MozLogLayer::new("wharf", "web", move || sink.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(type = "request.summary", code = 200u64, path = "/x", t = 1.5f64, "done");
            tracing::error!(answer = 42i64, "plain");
            let awkward = "quote \" backslash \\ newline \n tab \t é";
            let io = std::io::Error::other("disk \"full\"");
            tracing::warn!(text = awkward, debug = ?Some(awkward), error = &io as &dyn std::error::Error, ok = true, ratio = f64::NAN);
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        let summary = &lines[0];
        assert_eq!(summary["Type"], "request.summary");
        assert_eq!(summary["Logger"], "wharf-web");
        assert_eq!(summary["EnvVersion"], "2.0");
        assert_eq!(summary["Severity"], 6);
        assert_eq!(summary["Pid"], std::process::id());
        assert!(summary["Timestamp"].as_u64().unwrap() > 1_600_000_000_000_000_000);
        assert_eq!(summary["Fields"]["code"], 200);
        assert_eq!(summary["Fields"]["path"], "/x");
        assert_eq!(summary["Fields"]["msg"], "done");
        assert!(summary["Fields"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| !v.is_object() && !v.is_array()));
        assert_eq!(lines[1]["Severity"], 3);
        assert_eq!(lines[1]["Type"], "wharf_telemetry::mozlog::tests");
        let awkward = "quote \" backslash \\ newline \n tab \t é";
        let fields = &lines[2]["Fields"];
        assert_eq!(fields["text"], awkward);
        assert_eq!(fields["debug"], format!("{:?}", Some(awkward)));
        assert_eq!(fields["error"], "disk \"full\"");
        assert_eq!(fields["ok"], true);
        assert_eq!(fields["ratio"], Value::Null);
        assert_eq!(lines[2]["Severity"], 4);
    }

    /// Lines written while `f` runs, parsed.
    fn capture(f: impl FnOnce()) -> Vec<Value> {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let layer = MozLogLayer::new("wharf", "worker", move || sink.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn library_events_get_a_stable_type_and_own_events_their_own() {
        static LOG_BRIDGE: std::sync::Once = std::sync::Once::new();
        // What `tracing_subscriber`'s `try_init` installs in the binary; once per process.
        LOG_BRIDGE.call_once(|| tracing_log::LogTracer::init().unwrap());
        let lines = capture(|| {
            tracing::info!(target: "wharf_worker::startup", type = "startup.s3", dependency = "s3", "S3 is available again");
            tracing::debug!(target: "apalis_core::worker::context", "worker started");
            tracing::debug!(target: "aws_smithy_runtime::client::orchestrator", type = "request", "send");
            tracing::trace!(target: "aws_runtime::env_config::source", "config file not found");
            tracing::debug!(target: "hyper_util::client::legacy::pool", "pooling idle connection");
            log::warn!(target: "redis::aio::connection_manager", "reconnecting");
        });
        let types: Vec<&str> = lines.iter().map(|l| l["Type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "startup.s3",
                "lib.apalis",
                "lib.aws",
                "lib.aws",
                "lib.hyper",
                "lib.redis"
            ]
        );
        let own = &lines[0]["Fields"];
        assert_eq!(own["dependency"], "s3");
        assert!(
            own.get("type").is_none() && own.get("target").is_none(),
            "{own}"
        );
        // The module path is still there to search by, just not in Type.
        assert_eq!(lines[1]["Fields"]["target"], "apalis_core::worker::context");
        // A library's own `type` field is its business, not the line's Type.
        assert_eq!(lines[2]["Fields"]["type"], "request");
        assert_eq!(
            lines[5]["Fields"]["log.target"],
            "redis::aio::connection_manager"
        );
        assert_eq!(lines[5]["Fields"]["msg"], "reconnecting");
        assert_eq!(lines[5]["Severity"], 4);
    }
}
