//! `GET /ui/events`: the dashboard's sections as server-sent events, from
//! one feed per process that renders them once a second however many
//! dashboards are open (and not at all while none is).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};

use super::session::signed_in;
use super::snapshot::Snapshot;
use super::views::Sections;
use crate::app::App;
use crate::http::admin::{AUDITOR, Booking};
use crate::http::request::peer_of;

/// `GET /ui/events`: one rendering of the sections per second.
pub(crate) async fn events(
    State(app): State<Arc<App>>,
    ext: axum::http::Extensions,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let peer = peer_of(&ext);
    if let Err(r) = signed_in(
        &app,
        &headers,
        peer,
        (&Method::GET, &uri),
        Booking::Request,
        AUDITOR,
    )
    .await
    {
        return r;
    }
    let stream = futures_stream(app, headers, peer, uri);
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn futures_stream(
    app: Arc<App>,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
    uri: Uri,
) -> impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let mut sections = feed(&app);
    tokio::spawn(async move {
        let mut n = 0u64;
        // Each new rendering of the sections, as the process's one feed
        // makes it every second.
        while sections.changed().await.is_ok() {
            n += 1;
            // The stream outlives its request: the token, blocks and the
            // role are checked again every few seconds, and the stream
            // ends when they no longer hold.
            if n.is_multiple_of(5)
                && signed_in(
                    &app,
                    &headers,
                    peer,
                    (&Method::GET, &uri),
                    Booking::Recheck,
                    AUDITOR,
                )
                .await
                .is_err()
            {
                break;
            }
            let data = sections.borrow_and_update().as_ref().clone();
            if tx.send(Ok(Event::default().data(data))).await.is_err() {
                break;
            }
        }
    });
    tokio_stream_from(rx)
}

/// The dashboard's sections, rendered once a second by one task per process
/// however many dashboards are open (and not at all while none is): each
/// rendering costs a round of store queries, in a fleet over the network.
fn feed(app: &Arc<App>) -> tokio::sync::watch::Receiver<Arc<String>> {
    app.ui_feed
        .get_or_init(|| {
            let (tx, rx) = tokio::sync::watch::channel(Arc::new(String::new()));
            let app = Arc::downgrade(app);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let Some(a) = app.upgrade() else { break };
                    // The feed keeps one receiver of its own.
                    if tx.receiver_count() <= 1 {
                        continue;
                    }
                    let Ok(snap) = tokio::task::spawn_blocking(move || Snapshot::read(&a)).await
                    else {
                        continue;
                    };
                    match Sections::of(&snap).to_json() {
                        Ok(json) => {
                            let _ = tx.send(Arc::new(json));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the dashboard's sections did not render")
                        }
                    }
                }
            });
            rx
        })
        .clone()
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
