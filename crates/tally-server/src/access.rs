//! Access events: every gate decision becomes one, sent over a bounded channel
//! that never blocks a request (drops are counted), and written in batches to
//! the hash-chained access log (`access.db`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tally_core::verdict::Verdict;
use tally_store::access::AccessLog;

/// One decision, as investigators will read it.
#[derive(Clone, Debug, Serialize)]
pub struct AccessEvent {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Client address.
    pub client_ip: Option<String>,
    /// Device id.
    pub device: Option<String>,
    /// Token subject, when known.
    pub subject: Option<String>,
    /// Token id, when known.
    pub token_id: Option<String>,
    /// Signing key id, when known.
    pub kid: Option<String>,
    /// Route (proxy prefix), or `check` for the decision endpoint.
    pub route: String,
    /// HTTP method of the original request.
    pub method: String,
    /// Path of the original request.
    pub path: String,
    /// Data categories the route returns.
    pub data: Vec<String>,
    /// The verdict code.
    pub verdict: &'static str,
    /// Whether the request went on (monitor mode lets refusals through).
    pub passed: bool,
    /// Decision time in microseconds.
    pub latency_us: u64,
    /// Why a refusal was made, when it says more than the verdict (never
    /// secret material).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
    /// The upstream's response status, for requests the gate forwarded
    /// (`None` for `/v1/check`, where nginx forwards, and for refusals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// A resource server asked about the token (introspection); the request
    /// did not use it (see [`crate::gate_http::book`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inquiry: bool,
}

/// What the writer task receives. Nearly every message is an event: boxing
/// it to shrink the rare flush would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Msg {
    /// An event to write.
    Event(AccessEvent),
    /// Answer once everything queued before this is written and observed.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The sending side of the access log.
pub struct AccessEvents {
    tx: tokio::sync::mpsc::Sender<Msg>,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
}

/// Channel capacity: events beyond it are dropped (and counted), never waited for.
pub const CHANNEL_CAPACITY: usize = 65_536;

impl AccessEvents {
    /// Starts the writer task over `log`.
    /// Each batch is shown to `watch` (the detector) once it is written, so
    /// that a detection never names an event the log does not hold yet.
    pub fn start(log: Arc<AccessLog>, watch: Option<Arc<crate::watch::Watch>>) -> AccessEvents {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(CHANNEL_CAPACITY);
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        tokio::spawn(async move {
            let mut msgs = Vec::new();
            while rx.recv_many(&mut msgs, 4096).await > 0 {
                let mut batch = Vec::with_capacity(msgs.len());
                let mut flushes = Vec::new();
                for m in msgs.drain(..) {
                    match m {
                        Msg::Event(e) => batch.push(e),
                        Msg::Flush(done) => flushes.push(done),
                    }
                }
                if !batch.is_empty() {
                    let rows: Vec<(i64, Vec<u8>)> = batch
                        .iter()
                        .map(|e| (e.at_ms, serde_json::to_vec(e).unwrap_or_default()))
                        .collect();
                    let n = rows.len() as u64;
                    let log = log.clone();
                    match tokio::task::spawn_blocking(move || log.append(&rows)).await {
                        Ok(Ok(_)) => {
                            w.fetch_add(n, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => {
                            tracing::error!(code = e.code(), error = %e, events = n, "access events not written")
                        }
                        Err(_) => tracing::error!(events = n, "access log writer failed"),
                    }
                    // Detection runs even when the write failed: it matters more.
                    if let Some(w) = &watch {
                        w.observe(&batch);
                    }
                }
                for done in flushes {
                    let _ = done.send(());
                }
            }
        });
        AccessEvents {
            tx,
            dropped: AtomicU64::new(0),
            written,
        }
    }

    /// Queues an event without ever waiting; a full queue drops it (counted).
    pub fn record(&self, e: AccessEvent) {
        if self.tx.try_send(Msg::Event(e)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until every event queued before this call has been written (or
    /// failed) and shown to the detector, or `within` has passed; says
    /// whether it got there.
    pub async fn settle(&self, within: std::time::Duration) -> bool {
        let (done, answered) = tokio::sync::oneshot::channel();
        tokio::time::timeout(within, async {
            self.tx.send(Msg::Flush(done)).await.is_ok() && answered.await.is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events written to the log.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How much of each client-controlled field an access event keeps. A longer
/// value is cut at a character boundary and marked with the number of bytes
/// left out (`…[+N bytes]`), so that a flood of huge paths or device ids
/// costs the log and its queue no more than a flood of small ones.
pub mod limits {
    /// The request path (and query).
    pub const PATH: usize = 1024;
    /// The HTTP method.
    pub const METHOD: usize = 16;
    /// Device id, subject, token id and key id (the last three come from a
    /// token, which a forger chooses).
    pub const FIELD: usize = 256;
}

/// `s`, cut to at most `max` bytes, plus a marker saying how much was left
/// out and a digest of the whole value (so that values cut to the same
/// prefix still count as distinct, for the detector and for a report).
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    let tag: String = d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}…[+{} bytes, sha256 {tag}]", &s[..end], s.len() - end)
}

/// Builds an event from a decision.
#[allow(clippy::too_many_arguments)]
pub fn event(
    decision: &tally_core::gate::Decision,
    client_ip: Option<std::net::IpAddr>,
    device: Option<&str>,
    route: &str,
    method: &str,
    path: &str,
    data: &[String],
    passed: bool,
    latency: std::time::Duration,
) -> AccessEvent {
    let field = |s: Option<&str>| s.map(|s| bounded(s, limits::FIELD));
    let (verdict, subject, token_id, kid) = match decision {
        Ok(t) => (
            Verdict::Ok,
            field(Some(t.subject())),
            field(Some(t.token_id())),
            field(Some(t.kid())),
        ),
        Err(r) => (
            r.verdict(),
            field(r.subject.as_deref()),
            field(r.token_id.as_deref()),
            field(r.kid.as_deref()),
        ),
    };
    AccessEvent {
        at_ms: now_ms(),
        client_ip: client_ip.map(|i| i.to_string()),
        device: field(device),
        subject,
        token_id,
        kid,
        route: bounded(route, limits::PATH),
        method: bounded(method, limits::METHOD),
        path: bounded(path, limits::PATH),
        data: data.to_vec(),
        verdict: verdict.code(),
        passed,
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        upstream_status: None,
        detail: decision.as_ref().err().and_then(|r| r.detail),
        inquiry: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_at_a_char_boundary_and_keeps_values_apart() {
        assert_eq!(bounded("short", 16), "short");
        let long = "é".repeat(100);
        let cut = bounded(&long, 11);
        assert!(cut.starts_with("ééééé…[+190 bytes, sha256 "), "{cut}");
        assert!(cut.len() < 64);
        let (a, b) = ("x".repeat(300) + "a", "x".repeat(300) + "b");
        assert_ne!(bounded(&a, 256), bounded(&b, 256));
        let huge = bounded(&"y".repeat(100_000), limits::PATH);
        assert!(huge.len() <= limits::PATH + 48, "{}", huge.len());
    }
}
