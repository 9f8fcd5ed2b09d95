//! `GET /ui`: the dashboard page, its sections rendered from a fresh
//! snapshot (the page's script then keeps them live from `/ui/events`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::form;
use super::session::signed_in;
use super::snapshot::Snapshot;
use super::views::{DashboardPage, Sections, page};
use crate::app::App;
use crate::http::admin::{AUDITOR, Booking};
use crate::http::request::peer_of;

/// `GET /ui`.
pub(crate) async fn dashboard(
    State(app): State<Arc<App>>,
    ext: axum::http::Extensions,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let who = match signed_in(
        &app,
        &headers,
        peer_of(&ext),
        (&Method::GET, &uri),
        Booking::Request,
        AUDITOR,
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let a = app.clone();
    let Ok(snap) = tokio::task::spawn_blocking(move || Snapshot::read(&a)).await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    page(&DashboardPage {
        who: &who.name,
        role: &who.role,
        form_token: &form::token(&app, &headers),
        sections: Sections::of(&snap),
    })
}
