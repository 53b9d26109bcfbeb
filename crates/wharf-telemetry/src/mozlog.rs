//! A tracing layer that writes each event as one MozLog JSON line on stdout.
//!
//! Format (Dockerflow's mozlog.md): `Timestamp` (ns), `Type`, `Logger`, `Hostname`, `EnvVersion`
//! "2.0", `Severity` (syslog level), `Pid`, and flat `Fields`. An event's `type` field becomes
//! `Type` (dotted names such as `request.summary`); without one, the event's target is used.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
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

impl MozLogLayer<fn() -> std::io::Stdout> {
    /// A layer writing to stdout, with `Logger` = `{app}-{role}`.
    pub fn stdout(app: &str, role: &str) -> Self {
        Self::new(app, role, std::io::stdout)
    }
}

impl<W, O> MozLogLayer<W>
where
    W: Fn() -> O + Send + Sync + 'static,
    O: Write,
{
    pub fn new(app: &str, role: &str, make_writer: W) -> Self {
        Self {
            logger: format!("{app}-{role}"),
            hostname: hostname(),
            pid: std::process::id(),
            make_writer,
        }
    }

    fn render(&self, event: &Event<'_>) -> Vec<u8> {
        let mut visitor = FlatFields::default();
        event.record(&mut visitor);
        let kind = visitor
            .kind
            .take()
            .unwrap_or_else(|| event.metadata().target().to_string());
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let line = serde_json::json!({
            "Timestamp": u64::try_from(timestamp).unwrap_or(u64::MAX),
            "Type": kind,
            "Logger": self.logger,
            "Hostname": self.hostname,
            "EnvVersion": "2.0",
            "Severity": severity(*event.metadata().level()),
            "Pid": self.pid,
            "Fields": Value::Object(visitor.fields),
        });
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

impl<S, W, O> Layer<S> for MozLogLayer<W>
where
    S: Subscriber,
    W: Fn() -> O + Send + Sync + 'static,
    O: Write,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = self.render(event);
        // One write per line so concurrent events never interleave within a line.
        let _ = (self.make_writer)().write_all(&line);
    }
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Collects an event's fields as flat JSON scalars (MozLog forbids nested objects).
#[derive(Default)]
struct FlatFields {
    kind: Option<String>,
    fields: Map<String, Value>,
}

impl FlatFields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = match field.name() {
            "message" => "msg",
            other => other,
        };
        if name == "type" {
            if let Value::String(s) = value {
                self.kind = Some(s);
                return;
            }
        }
        self.fields.insert(name.to_string(), value);
    }
}

impl Visit for FlatFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
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
    }
}
