//! A tracing layer that writes each event as one MozLog JSON line on stdout.
//!
//! Format (Dockerflow's mozlog.md): `Timestamp` (ns), `Type`, `Logger`, `Hostname`, `EnvVersion`
//! "2.0", `Severity` (syslog level), `Pid`, and flat `Fields`. An event's `type` field becomes
//! `Type` (dotted names such as `request.summary`); without one, the event's target is used.

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
        let mut visitor = FieldWriter {
            out: fields,
            kind: None,
            empty: true,
        };
        event.record(&mut visitor);
        let kind = visitor.kind;
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
            None => push_json(line, event.metadata().target()),
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

/// Syslog severities, as MozLog wants them.
fn severity(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// This host's name, the one every log line's `Hostname` and every worker name carry: the
/// kernel's (a container's or pod's own name), else `HOSTNAME`, else `unknown`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.trim().is_empty())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Writes an event's fields as the members of one flat JSON object (MozLog forbids nesting).
struct FieldWriter<'a> {
    out: &'a mut Vec<u8>,
    /// The event's `type` field, which becomes the line's `Type` rather than a field.
    kind: Option<String>,
    empty: bool,
}

impl FieldWriter<'_> {
    fn key(&mut self, field: &Field) {
        let name = match field.name() {
            "message" => "msg",
            other => other,
        };
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
}

impl Visit for FieldWriter<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "type" {
            self.kind = Some(format!("{value:?}"));
            return;
        }
        self.key(field);
        push_json(self.out, &format_args!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "type" {
            self.kind = Some(value.to_string());
            return;
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
}
