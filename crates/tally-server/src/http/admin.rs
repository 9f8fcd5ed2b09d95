//! The admin API (`/v1/admin/...`): containment blocks and legal holds over
//! HTTP, for responders and for automation.
//!
//! An admin request carries an access token like any other request and goes
//! through the full gate decision (ledger tally, DPoP binding, blocks): a
//! forged admin token is refused and reported like every forgery. The token's
//! subject must then have the `admin` role *now* (`tally users role NAME
//! admin`); the role is read on every request, so taking it away takes effect
//! at once. Every admin call is an access event on route `admin`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::request::{Facts, Target, peer_of};
use crate::app::App;
use crate::blocking::blocking;
use crate::contain::{block_target, reason};
use crate::error::ApiError;

/// An authenticated administrator: the request's token passed the full gate
/// decision (booked like any request) and its subject has the `admin` role
/// now. As an extractor, it answers the refusal itself.
pub(super) struct Admin(pub(super) String);

/// An authenticated auditor (or administrator): the same check, for the
/// `auditor` or `admin` role.
pub(super) struct Auditor;

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Admin, Response> {
        let facts = Facts::read(app, &parts.headers, peer_of(&parts.extensions));
        check_role(
            app,
            &facts,
            &parts.method,
            &parts.uri,
            Booking::Request,
            ADMIN,
        )
        .await
    }
}

impl FromRequestParts<Arc<App>> for Auditor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Auditor, Response> {
        let facts = Facts::read(app, &parts.headers, peer_of(&parts.extensions));
        check_role(
            app,
            &facts,
            &parts.method,
            &parts.uri,
            Booking::Request,
            AUDITOR,
        )
        .await
        .map(|_| Auditor)
    }
}

/// Whether an admin check is a request of its own, booked as every gate
/// decision is (access log, detector, metrics), or the check again of one
/// already admitted (the dashboard's stream every few seconds, its sign-in
/// for a token just issued), which books nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Booking {
    /// A request: booked.
    Request,
    /// A repeated check: not booked.
    Recheck,
}

/// The roles that may use the admin API and act from the dashboard.
pub(super) const ADMIN: &[&str] = &["admin"];
/// The roles that may read what names customers (the ledger's entries,
/// the dashboard, incident reports): auditors, and administrators.
pub(super) const AUDITOR: &[&str] = &["auditor", "admin"];

/// A user who passed [`check_caller`]: the name, and the role it has now.
pub(super) struct Caller {
    /// The user (the token's subject).
    pub(super) name: String,
    /// Its role, one of those asked for.
    pub(super) role: String,
}

/// The full gate decision for the request's token, booked or not, then one
/// of `roles`.
pub(super) async fn check_role(
    app: &Arc<App>,
    facts: &Facts<'_>,
    method: &Method,
    uri: &Uri,
    booking: Booking,
    roles: &[&str],
) -> Result<Admin, Response> {
    check_caller(app, facts, method, uri, booking, roles)
        .await
        .map(|c| Admin(c.name))
}

/// [`check_role`], answering with the caller's role too.
pub(super) async fn check_caller(
    app: &Arc<App>,
    facts: &Facts<'_>,
    method: &Method,
    uri: &Uri,
    booking: Booking,
    roles: &[&str],
) -> Result<Caller, Response> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let target = Target::from_headers(facts.headers, method.as_str(), path, facts.via_proxy);
    let decision = super::decide::for_audience(
        super::decide::decide_for(app, facts, &target).await,
        &app.config.audience,
    );
    let verdict = match booking {
        Booking::Request => {
            super::decide::record_decision(app, &decision, facts, ("admin", method.as_str(), path))
        }
        Booking::Recheck => match &decision {
            Ok(_) => tally_core::verdict::Verdict::Ok,
            Err(r) => r.verdict(),
        },
    };
    let token = match decision {
        Ok(t) => t,
        Err(r) => return Err(super::respond::refuse(app, &r, verdict, facts.now())),
    };
    require_role(app, &token, method, path, roles).await
}

/// The user `token` belongs to: a token tally issued, of a user with one of
/// `roles`.
async fn require_role(
    app: &Arc<App>,
    token: &tally_core::gate::TalliedToken,
    method: &Method,
    path: &str,
    roles: &[&str],
) -> Result<Caller, Response> {
    // Only tokens tally itself issued (password, and one-time code where
    // enrolled): an external identity provider's token for a subject of the
    // same name must not carry tally's admin role.
    let own = app
        .own_keys
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(token.kid())
        .is_some();
    if !own {
        tracing::warn!(event = "admin_denied", sub = ?token.subject(), kid = %token.kid(), "admin API refused: token from an external issuer");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the admin API takes only tokens issued by tally itself",
        )
        .into_response());
    }
    let a = app.clone();
    let sub = token.subject().to_string();
    let role = tokio::task::spawn_blocking(move || a.dir.state.user_role(&sub))
        .await
        .map_err(|_| ApiError::unavailable("internal").into_response())?
        .map_err(|e| {
            tracing::error!(code = e.code(), error = %e, "state store failed or refused a row during admin check");
            ApiError::unavailable("store_unavailable").into_response()
        })?;
    let Some(role) = role.filter(|r| roles.contains(&r.as_str())) else {
        tracing::warn!(event = "admin_denied", sub = ?token.subject(), method = %method, path = ?path, "refused: the user lacks the role");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this needs the role {} (tally users role NAME {})",
                roles.join(" or "),
                roles[0]
            ),
        )
        .into_response());
    };
    Ok(Caller {
        name: token.subject().to_string(),
        role,
    })
}

fn block_json(b: &tally_store::BlockRow) -> Value {
    json!({
        "id": b.id,
        "kind": b.kind,
        "value": b.value,
        "reason": b.reason,
        "actor": b.actor,
        "created_at": b.created_at,
        "expires_at": b.expires_at,
    })
}

/// `GET /v1/admin/blocks`: the blocks in force.
pub(super) async fn list_blocks(State(app): State<Arc<App>>, _admin: Admin) -> Response {
    let a = app.clone();
    match blocking(move || a.dir.state.blocks(a.clock.now())).await {
        Ok(rows) => {
            Json(json!({"blocks": rows.iter().map(block_json).collect::<Vec<_>>()})).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Body of `POST /v1/admin/blocks`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewBlock {
    kind: String,
    value: String,
    reason: String,
    /// Lifetime in seconds; without it the block stays until removed.
    #[serde(default)]
    expires_in_secs: Option<i64>,
}

fn bad(message: String) -> Response {
    ApiError::bad_request("invalid_request", message).into_response()
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| crate::error::body_problem(&e))
}

/// `POST /v1/admin/blocks` `{kind, value, reason, expires_in_secs?}` → `201`
/// with the block; in force on this node at once, on every node within a
/// second.
pub(super) async fn add_block(
    State(app): State<Arc<App>>,
    Admin(actor): Admin,
    body: axum::body::Bytes,
) -> Response {
    let req: NewBlock = match parse(&body) {
        Ok(r) => r,
        Err(m) => return bad(m),
    };
    let (kind, value) = match block_target(&req.kind, &req.value) {
        Ok(t) => t,
        Err(m) => return bad(m),
    };
    let why = match reason(&req.reason) {
        Ok(r) => r.to_string(),
        Err(m) => return bad(m),
    };
    let now = app.clock.now();
    let expires_at = match req.expires_in_secs {
        None => None,
        Some(s) if (1..=10 * 365 * 86_400).contains(&s) => Some(now + s),
        Some(_) => return bad("expires_in_secs must be between 1 and ten years".into()),
    };
    let a = app.clone();
    let by = format!("admin:{actor}");
    // The answer is built from what was stored, not read back.
    let row = |id| tally_store::BlockRow {
        id,
        kind: kind.to_string(),
        value: value.clone(),
        reason: why.clone(),
        actor: by.clone(),
        created_at: now,
        expires_at,
    };
    let (v, w, b) = (value.clone(), why.clone(), by.clone());
    match blocking(move || a.dir.state.add_block(kind, &v, &w, &b, now, expires_at)).await {
        Ok(id) => {
            app.reload_blocks();
            tracing::warn!(event = "block_added", id, kind, value = ?value, actor = ?actor, "containment block added");
            (StatusCode::CREATED, Json(block_json(&row(id)))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `DELETE /v1/admin/blocks/{id}` → `204`, or `404` if no such block is in force.
pub(super) async fn remove_block(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
    Admin(actor): Admin,
) -> Response {
    let a = app.clone();
    match blocking(move || a.dir.state.remove_block(id, a.clock.now())).await {
        Ok(true) => {
            app.reload_blocks();
            tracing::warn!(event = "block_removed", id, actor = ?actor, "containment block lifted");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => ApiError::not_found(format!("no block {id} in force")).into_response(),
        Err(e) => e.into_response(),
    }
}

fn hold_json(h: &tally_incident::access::Hold) -> Value {
    json!({
        "id": h.id,
        "from_ms": h.from_ms,
        "until_ms": h.until_ms,
        "reason": h.reason,
        "actor": h.actor,
    })
}

/// `GET /v1/admin/holds`: the legal holds in force.
pub(super) async fn list_holds(State(app): State<Arc<App>>, _admin: Admin) -> Response {
    let a = app.clone();
    match blocking(move || a.access_log.holds()).await {
        Ok(rows) => {
            Json(json!({"holds": rows.iter().map(hold_json).collect::<Vec<_>>()})).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Body of `POST /v1/admin/holds`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewHold {
    /// Start of the held range, unix milliseconds.
    from_ms: i64,
    /// End of the held range, unix milliseconds (inclusive).
    until_ms: i64,
    reason: String,
}

/// `POST /v1/admin/holds` `{from_ms, until_ms, reason}` → `201` with the hold:
/// from then on no access event in the range can be deleted.
pub(super) async fn add_hold(
    State(app): State<Arc<App>>,
    Admin(actor): Admin,
    body: axum::body::Bytes,
) -> Response {
    let req: NewHold = match parse(&body) {
        Ok(r) => r,
        Err(m) => return bad(m),
    };
    if req.from_ms > req.until_ms || req.from_ms < 0 {
        return bad("need 0 <= from_ms <= until_ms".into());
    }
    let why = match reason(&req.reason) {
        Ok(r) => r.to_string(),
        Err(m) => return bad(m),
    };
    let a = app.clone();
    let by = format!("admin:{actor}");
    let (from, until) = (req.from_ms, req.until_ms);
    let (w, b) = (why.clone(), by.clone());
    match blocking(move || a.access_log.hold(from, until, &w, &b, a.clock.now())).await {
        Ok(id) => {
            tracing::warn!(event = "legal_hold_placed", id, from_ms = from, until_ms = until, actor = ?actor, "legal hold placed on the access log");
            let hold = tally_incident::access::Hold {
                id,
                from_ms: from,
                until_ms: until,
                reason: why,
                actor: by,
            };
            (StatusCode::CREATED, Json(hold_json(&hold))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Query of `DELETE /v1/admin/holds/{id}`.
#[derive(Deserialize)]
pub(super) struct ReleaseQuery {
    #[serde(default)]
    reason: String,
}

/// `DELETE /v1/admin/holds/{id}?reason=…` → `204`, or `404` if no such hold is
/// in force. The reason and the administrator are kept with the hold.
pub(super) async fn release_hold(
    State(app): State<Arc<App>>,
    // Path and query are read first, as before the caller is checked.
    Path(id): Path<i64>,
    axum::extract::Query(q): axum::extract::Query<ReleaseQuery>,
    Admin(actor): Admin,
) -> Response {
    let why = match reason(&q.reason) {
        Ok(r) => r.to_string(),
        Err(_) => return bad("releasing a legal hold needs ?reason= saying why it may end".into()),
    };
    let a = app.clone();
    let by = format!("admin:{actor}");
    let w = why.clone();
    match blocking(move || a.access_log.release(id, a.clock.now(), &by, &w)).await {
        Ok(true) => {
            tracing::warn!(event = "legal_hold_released", id, actor = ?actor, reason = ?why, "legal hold released");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => ApiError::not_found(format!("no hold {id} in force")).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/admin/incidents`: every incident, newest first, with its legal
/// clocks and the nearest deadline.
pub(super) async fn list_incidents(State(app): State<Arc<App>>, _admin: Admin) -> Response {
    let a = app.clone();
    let listed = blocking(move || {
        let now = app.clock.now();
        a.watch.store.incidents().map(|list| {
            list.iter()
                .map(|i| {
                    tally_incident::report::incident_json(
                        &a.watch.store,
                        i,
                        a.watch.regimes(),
                        now,
                        false,
                    )
                })
                .collect::<Vec<_>>()
        })
    })
    .await;
    match listed {
        Ok(list) => Json(json!({"incidents": list})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/admin/incidents/{id}`: one incident with detections and timeline.
pub(super) async fn show_incident(
    State(app): State<Arc<App>>,
    _admin: Admin,
    Path(id): Path<i64>,
) -> Response {
    let a = app.clone();
    let shown = blocking(move || {
        let now = app.clock.now();
        a.watch.store.incident(id).map(|inc| {
            inc.map(|i| {
                tally_incident::report::incident_json(
                    &a.watch.store,
                    &i,
                    a.watch.regimes(),
                    now,
                    true,
                )
            })
        })
    })
    .await;
    match shown {
        Ok(Some(doc)) => Json(doc).into_response(),
        Ok(None) => ApiError::not_found(format!("no incident {id}")).into_response(),
        Err(e) => e.into_response(),
    }
}
