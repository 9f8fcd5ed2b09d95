//! Serving HTTP/1.1 on a listener with limits on what a client may hold
//! open: the API port and the gate's port alike.
//!
//! * **Header-read timeout** (`[connections] header_read_timeout_secs`,
//!   default 60 s, as nginx's `client_header_timeout`): from the moment a
//!   connection is ready for a request (accepted, or done with the previous
//!   one) until the request's head is complete. A half-sent request and a
//!   connection that is opened and never used are closed when it runs out.
//! * **Idle timeout** (`idle_timeout_secs`, default 75 s, as nginx's
//!   `keepalive_timeout`): a connection on which no byte moves either way for
//!   that long is closed, whatever it is doing (a stalled upload, a client
//!   that stopped reading its answer).
//! * **Connection caps**: at most `max_per_address` connections per client
//!   address (proxies in `trusted_proxies` are exempt: every client behind
//!   them shares their address) and `max_total` in all; a connection over a
//!   cap is closed at once, before any byte is read, and counted.
//!
//! Each request carries the peer address as axum's `ConnectInfo`, as with
//! `axum::serve`. Shutdown stops accepting, asks every open connection to
//! finish its current request, and waits for them (at most 20 s: a stream
//! that never ends, such as a dashboard left open, must not hold a shutdown).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::config::Connections;

/// What the listeners of one process count (shown in `/metrics`).
#[derive(Default)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections closed at once: over the per-address cap.
    pub refused_per_address: AtomicU64,
    /// Connections closed at once: over the total cap.
    pub refused_total: AtomicU64,
    /// Connections closed because no byte moved for the idle timeout.
    pub idle_closed: AtomicU64,
}

/// Open connections per client address.
struct Slots {
    per_address: Mutex<HashMap<IpAddr, usize>>,
    limits: Connections,
    exempt: Vec<tally_core::containment::Cidr>,
    stats: Arc<ConnectionStats>,
}

/// One open connection's place under the caps, given back on drop.
struct Slot {
    slots: Arc<Slots>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.stats.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut m = self
                .slots
                .per_address
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

impl Slots {
    /// A place for a connection from `ip`, or `None` over a cap.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let open = self.stats.open.fetch_add(1, Ordering::Relaxed);
        if open >= self.limits.max_total {
            self.stats.open.fetch_sub(1, Ordering::Relaxed);
            self.stats.refused_total.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self.exempt.iter().any(|c| c.contains(ip)) {
            return Some(Slot {
                slots: self.clone(),
                ip: None,
            });
        }
        let mut m = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.limits.max_per_address {
            drop(m);
            self.stats.open.fetch_sub(1, Ordering::Relaxed);
            self.stats
                .refused_per_address
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            ip: Some(ip),
        })
    }
}

/// A coarse clock for "when did a byte last move": milliseconds since the
/// connection was accepted.
struct Activity {
    since: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A TCP stream that notes when a byte last moved.
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Resolves once no byte has moved for `limit`.
async fn idle(activity: &Activity, limit: Duration) {
    loop {
        let idle = activity.idle_for();
        if idle >= limit {
            return;
        }
        tokio::time::sleep(limit - idle).await;
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves,
/// then lets open connections finish (at most 20 s).
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Connections,
    exempt: Vec<tally_core::containment::Cidr>,
    stats: Arc<ConnectionStats>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Slots {
        per_address: Mutex::new(HashMap::new()),
        limits,
        exempt,
        stats: stats.clone(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather
                    // than spin, and keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = slots.take(peer.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        let io = TokioIo::new(Watched {
            io: stream,
            activity: activity.clone(),
        });
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req)
            });
        let mut stop = stop_rx.clone();
        let done = done_tx.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _done = done;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(io, service);
            tokio::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(peer = %peer, error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = idle(&activity, limits.idle_timeout) => {
                        stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %peer, "connection idle: closed");
                        break;
                    }
                    _ = stop.wait_for(|s| *s), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    // Every connection task holds a sender: the channel closes when the last
    // one ends.
    let _ = tokio::time::timeout(Duration::from_secs(20), done_rx.recv()).await;
    Ok(())
}

/// The peer's address for a connection counted under the caps (for tests).
#[cfg(test)]
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(per: usize, total: usize, exempt: &[&str]) -> Arc<Slots> {
        Arc::new(Slots {
            per_address: Mutex::new(HashMap::new()),
            limits: Connections {
                max_per_address: per,
                max_total: total,
                ..Connections::default()
            },
            exempt: exempt
                .iter()
                .map(|c| tally_core::containment::Cidr::parse(c).unwrap())
                .collect(),
            stats: Arc::new(ConnectionStats::default()),
        })
    }

    #[test]
    fn caps_per_address_and_in_all_and_give_back_on_drop() {
        let s = slots(2, 3, &["10.0.0.1"]);
        let a1 = s.take(ip("192.0.2.1")).unwrap();
        let _a2 = s.take(ip("192.0.2.1")).unwrap();
        assert!(s.take(ip("192.0.2.1")).is_none(), "third from one address");
        let _b = s.take(ip("192.0.2.2")).unwrap();
        assert!(s.take(ip("192.0.2.3")).is_none(), "fourth in all");
        drop(a1);
        let _c = s.take(ip("192.0.2.3")).unwrap();
        assert_eq!(s.stats.refused_per_address.load(Ordering::Relaxed), 1);
        assert_eq!(s.stats.refused_total.load(Ordering::Relaxed), 1);
        assert_eq!(s.stats.open.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn trusted_proxies_are_not_capped_per_address() {
        let s = slots(1, 10, &["10.0.0.1"]);
        let held: Vec<_> = (0..5).map(|_| s.take(ip("10.0.0.1")).unwrap()).collect();
        assert_eq!(held.len(), 5);
        assert!(s.per_address.lock().unwrap().is_empty());
        drop(held);
        assert_eq!(s.stats.open.load(Ordering::Relaxed), 0);
    }
}
