//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as text for people or
//! as one JSON object per line for log shippers (`--log-format json`, `WICK_LOG_FORMAT=json`).
//! [`metrics`]: what this process counts for `GET /metrics`.

pub mod metrics;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// The variable that carries the log format; a training child process inherits it, so its lines
/// (on the same stderr) come in the same format as its parent's.
pub const LOG_FORMAT_ENV: &str = "WICK_LOG_FORMAT";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields (`message`
    /// among them) at the top level, and the enclosing spans (`span`, `spans`).
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Installs the global subscriber, writing to stderr. Later calls do nothing.
pub fn init(format: LogFormat) {
    let _ = subscriber(format, std::io::stderr).try_init();
}

/// The subscriber [`init`] installs, writing to `writer`.
pub fn subscriber<W>(format: LogFormat, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).with_ansi(false).finish()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn json_format_writes_one_object_per_line_with_span_fields() {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let make = move || Sink(sink.clone());
        tracing::subscriber::with_default(subscriber(LogFormat::Json, make), || {
            let span = tracing::info_span!(
                "http_request",
                path = "/v1/files/{id}",
                org = tracing::field::Empty
            );
            let _entered = span.enter();
            tracing::Span::current().record("org", "org-1");
            tracing::info!(job = "ftjob-1", "hello");
        });
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "INFO", "{v}");
        assert_eq!(v["message"], "hello", "{v}");
        assert_eq!(v["job"], "ftjob-1", "{v}");
        assert_eq!(v["span"]["name"], "http_request", "{v}");
        assert_eq!(v["span"]["path"], "/v1/files/{id}", "{v}");
        assert_eq!(v["span"]["org"], "org-1", "{v}");
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
