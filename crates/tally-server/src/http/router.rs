//! The API's routes: one table, every handler named once.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use super::{check, external, ledger, login, meta};
use crate::app::App;

/// The HTTP routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/metrics", get(meta::metrics))
        .route("/openapi.json", get(meta::openapi))
        .route("/.well-known/jwks.json", get(meta::jwks))
        .route(
            "/.well-known/tally-events-jwks.json",
            get(meta::events_jwks),
        )
        .route("/v1/login", post(login::login))
        .route("/v1/refresh", post(super::sessions::refresh))
        .route("/v1/revoke", post(super::sessions::revoke))
        .route("/v1/introspect", post(super::sessions::introspect))
        .route("/v1/logout", post(super::sessions::logout))
        .route("/v1/issuances", post(external::register))
        .route("/v1/check", get(check::check))
        .route(
            "/v1/admin/blocks",
            get(super::admin::list_blocks).post(super::admin::add_block),
        )
        .route(
            "/v1/admin/blocks/{id}",
            axum::routing::delete(super::admin::remove_block),
        )
        .route("/ui", get(super::ui::dashboard))
        .route(
            "/ui/login",
            get(super::ui::login_page).post(super::ui::login),
        )
        .route("/ui/logout", post(super::ui::logout))
        .route("/ui/events", get(super::ui::events))
        .route("/ui/incidents/{id}", get(super::ui::incident))
        .route(
            "/ui/incidents/{id}/{name}",
            get(super::ui::incident_file).post(super::ui::incident_act),
        )
        .route("/v1/admin/incidents", get(super::admin::list_incidents))
        .route("/v1/admin/incidents/{id}", get(super::admin::show_incident))
        .route(
            "/v1/admin/holds",
            get(super::admin::list_holds).post(super::admin::add_hold),
        )
        .route(
            "/v1/admin/holds/{id}",
            axum::routing::delete(super::admin::release_hold),
        )
        .route("/v1/ledger/checkpoint", get(ledger::checkpoint))
        .route("/v1/ledger/key", get(ledger::key))
        .route("/v1/ledger/proof/inclusion", get(ledger::inclusion))
        .route("/v1/ledger/proof/consistency", get(ledger::consistency))
        .route("/v1/ledger/entries", get(ledger::entries))
        .fallback(meta::not_found)
        // Every request body tally accepts is small JSON.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(app)
}
