//! What this process counts for `GET /metrics` (served by `crate::api::metrics`, which adds the
//! job and queue gauges it reads from the store at scrape time): HTTP requests and their latency
//! by route template and status, worker slots busy and idle, each running job's latest step and
//! tokens/s, SSE watchers and uploads in progress.
//!
//! Built on the `prometheus` crate (TiKV's client), not on the `metrics` facade with
//! `metrics-exporter-prometheus`: a per-job gauge must disappear when its job leaves this process,
//! and `prometheus`'s vectors remove a label set outright (`remove_label_values`) where the
//! facade's exporter only ages idle series out; the scrape-time gauges are a throwaway registry
//! encoded beside this one, with no global recorder to install or share with the tests; and the
//! crate's default features (protobuf) are off, so it adds two small crates to the build.
//!
//! The counters are process-wide, as a scrape is of one process: every router and worker slot
//! in the process adds to them.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    proto::MetricFamily,
};

/// The `route` label of a request that matched no route (its raw path is never a label).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The device label of worker slots: training runs on the CPU.
const DEVICE: &str = "cpu";

/// Latency buckets, in seconds: 1 ms to 60 s (the request timeout's default).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    worker_slots: IntGaugeVec,
    training_step: IntGaugeVec,
    training_tokens_per_second: prometheus::GaugeVec,
    sse_watchers: IntGauge,
    uploads: IntGauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let http_labels = &["method", "route", "status"];
    let m = Metrics {
        http_requests: IntCounterVec::new(
            Opts::new(
                "wick_http_requests_total",
                "HTTP requests answered, by method, route template and status code",
            ),
            http_labels,
        )
        .expect("valid metric"),
        http_duration: HistogramVec::new(
            HistogramOpts::new(
                "wick_http_request_duration_seconds",
                "Time to answer an HTTP request (to the response's head: streams and downloads count until they start)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            http_labels,
        )
        .expect("valid metric"),
        worker_slots: IntGaugeVec::new(
            Opts::new(
                "wick_worker_slots",
                "Worker slots in this process, by device and state (busy: running a job)",
            ),
            &["device", "state"],
        )
        .expect("valid metric"),
        training_step: IntGaugeVec::new(
            Opts::new(
                "wick_training_step",
                "The latest step a job running in this process reported",
            ),
            &["job_id"],
        )
        .expect("valid metric"),
        training_tokens_per_second: prometheus::GaugeVec::new(
            Opts::new(
                "wick_training_tokens_per_second",
                "Training throughput at the latest step of a job running in this process",
            ),
            &["job_id"],
        )
        .expect("valid metric"),
        sse_watchers: IntGauge::new(
            "wick_sse_watchers",
            "Server-Sent Events watchers of jobs connected now",
        )
        .expect("valid metric"),
        uploads: IntGauge::new("wick_uploads_in_progress", "File uploads being received now")
            .expect("valid metric"),
        registry,
    };
    for state in ["busy", "idle"] {
        m.worker_slots.with_label_values(&[DEVICE, state]).set(0);
    }
    let r = &m.registry;
    r.register(Box::new(m.http_requests.clone()))
        .expect("unique");
    r.register(Box::new(m.http_duration.clone()))
        .expect("unique");
    r.register(Box::new(m.worker_slots.clone()))
        .expect("unique");
    r.register(Box::new(m.training_step.clone()))
        .expect("unique");
    r.register(Box::new(m.training_tokens_per_second.clone()))
        .expect("unique");
    r.register(Box::new(m.sse_watchers.clone()))
        .expect("unique");
    r.register(Box::new(m.uploads.clone())).expect("unique");
    m
});

/// Counts one answered request. `route` is a route template or [`UNMATCHED_ROUTE`]; a method
/// outside HTTP's own is counted as `other`, so clients cannot mint label values.
pub fn record_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let method = match method {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" | "CONNECT" | "TRACE" => {
            method
        }
        _ => "other",
    };
    let status = status.to_string();
    let labels = [method, route, status.as_str()];
    let m = &*METRICS;
    m.http_requests.with_label_values(&labels).inc();
    m.http_duration
        .with_label_values(&labels)
        .observe(elapsed.as_secs_f64());
}

/// This process's metrics, plus `extra` families (gathered at scrape time), in the text format.
pub fn render(extra: Vec<MetricFamily>) -> String {
    let mut families = METRICS.registry.gather();
    families.extend(extra);
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families, &mut out)
        .expect("text encoding writes to memory");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// A gauge held up by one while the guard lives.
pub struct Held(IntGauge);

impl Held {
    fn new(g: IntGauge) -> Self {
        g.inc();
        Held(g)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts an SSE watcher while the guard lives.
pub fn sse_watcher() -> Held {
    Held::new(METRICS.sse_watchers.clone())
}

/// Counts an upload in progress while the guard lives.
pub fn upload() -> Held {
    Held::new(METRICS.uploads.clone())
}

/// Counts a worker slot (idle) while the guard lives.
pub fn worker_slot() -> Held {
    Held::new(slots("idle"))
}

fn slots(state: &str) -> IntGauge {
    METRICS.worker_slots.with_label_values(&[DEVICE, state])
}

/// A worker slot running a job: busy rather than idle while it lives, and the job's training
/// gauges (set by [`RunningJob::step`]) removed when it ends.
pub struct RunningJob {
    job_id: String,
    _busy: Held,
}

impl RunningJob {
    pub fn start(job_id: &str) -> Self {
        slots("idle").dec();
        RunningJob {
            job_id: job_id.to_string(),
            _busy: Held::new(slots("busy")),
        }
    }

    /// The job's latest training step and throughput.
    pub fn step(&self, step: u64, tokens_per_second: f64) {
        let labels = [self.job_id.as_str()];
        METRICS
            .training_step
            .with_label_values(&labels)
            .set(step as i64);
        METRICS
            .training_tokens_per_second
            .with_label_values(&labels)
            .set(tokens_per_second);
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        let labels = [self.job_id.as_str()];
        let _ = METRICS.training_step.remove_label_values(&labels);
        let _ = METRICS
            .training_tokens_per_second
            .remove_label_values(&labels);
        slots("idle").inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_job_moves_a_slot_to_busy_and_its_gauges_leave_with_it() {
        let _slot = worker_slot();
        let job = RunningJob::start("ftjob-unit");
        job.step(7, 1234.5);
        let during = render(vec![]);
        assert!(
            during.contains(r#"wick_training_step{job_id="ftjob-unit"} 7"#),
            "{during}"
        );
        assert!(
            during.contains(r#"wick_training_tokens_per_second{job_id="ftjob-unit"} 1234.5"#),
            "{during}"
        );
        drop(job);
        let after = render(vec![]);
        assert!(!after.contains("ftjob-unit"), "{after}");
    }
}
