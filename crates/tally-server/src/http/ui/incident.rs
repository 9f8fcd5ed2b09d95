//! One incident on the dashboard:
//!
//! * `GET /ui/incidents/{id}`: its page (auditors and administrators);
//! * `GET /ui/incidents/{id}/report.html`, `report.json`, `affected.csv`:
//!   the regulator-ready report and the affected customers, made by the same
//!   code as `tally incident report` and `tally incident affected`, from
//!   this node's access log (auditors and administrators);
//! * `POST /ui/incidents/{id}/ack`, `note`, `contain`: the responders'
//!   actions, through `tally_incident::act` as `tally incident ack|note|
//!   contain` (administrators only: the role is checked on the post itself,
//!   with the session's form token and the same-origin check).
//!
//! An id that is not a number is answered `400`, an unknown one `404`, each
//! with a page. Making a report reads the whole access log, so the dashboard
//! makes one at a time (`App::ui_reports`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tally_incident::act::{self, ActError};
use tally_incident::detect::Containment;
use tally_incident::report::{Impact, Report};
use tally_incident::store::IncidentError;
use tally_incident::watch::{DRILL_PREFIX, Responder};

use super::form;
use super::incident_page::{Context, Viewer, incident_page};
use super::session::{behind_proxy, cross_site, same_origin, signed_in};
use super::views::error_page;
use crate::app::App;
use crate::http::admin::{ADMIN, AUDITOR, Booking};
use crate::http::request::peer_of;

/// The Content-Security-Policy of a served report: its inline style, and
/// nothing else (it has no script and no form).
const REPORT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'";

/// An incident id as the path gives it: digits only.
fn parse_id(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn bad_id() -> Response {
    error_page(
        StatusCode::BAD_REQUEST,
        "Not an incident id",
        "An incident is named by its number, as the dashboard lists it.",
    )
}

fn no_incident(id: i64) -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "No such incident",
        &format!("There is no incident {id}."),
    )
}

fn not_found() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "The dashboard has no such page.",
    )
}

fn unavailable() -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Not available",
        "The incident could not be read just now; try again in a moment.",
    )
}

/// How long a page waits for the report another request is making.
const REPORT_WAIT_SECS: u64 = 10;

/// The answer when another report is being made for too long.
fn busy() -> Response {
    let mut r = error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Busy",
        "Another incident report is being made from the access log; try again in a moment.",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    r
}

/// An incident's report, the impact it was made from, and every step its
/// detections suggest.
type Found = (Report, Impact, Vec<Containment>);

/// Reads incident `id`'s report (one at a time; `None` for no such
/// incident), or the page to answer instead.
async fn read(app: &Arc<App>, id: i64) -> Result<Option<Found>, Response> {
    // One report at a time, and a bounded wait for it: reloading pages
    // cannot queue scans of the access log without end.
    let wait = tokio::time::timeout(
        std::time::Duration::from_secs(REPORT_WAIT_SECS),
        app.ui_reports.clone().acquire_owned(),
    );
    let Ok(Ok(one)) = wait.await else {
        return Err(busy());
    };
    let a = app.clone();
    // The permit goes with the reading: a request dropped meanwhile does not
    // let a second one start.
    match tokio::task::spawn_blocking(move || {
        let _one = one;
        report(&a, id)
    })
    .await
    {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => {
            tracing::error!(incident = id, error = %e, "the incident's report could not be made");
            Err(unavailable())
        }
        Err(_) => Err(unavailable()),
    }
}

/// What `tally incident report` makes, from this node's access log (store
/// calls: run off the async threads).
fn report(app: &App, id: i64) -> Result<Option<Found>, String> {
    let store = &app.watch.store;
    if store.incident(id).map_err(|e| e.to_string())?.is_none() {
        return Ok(None);
    }
    let name = "access.db (this node)".to_string();
    let logs = [(name, &*app.access_log)];
    let (report, impact) = tally_incident::report::report_for(
        store,
        &logs,
        id,
        app.watch.regimes(),
        &app.config.contacts,
        app.clock.now(),
        &|s| app.dir.is_member(s),
        &mut |_| {},
    )?;
    let suggested = act::suggested(store, id).map_err(|e| e.to_string())?;
    Ok(Some((report, impact, suggested)))
}

/// `GET /ui/incidents/{id}`.
pub(crate) async fn page(
    State(app): State<Arc<App>>,
    ext: Extensions,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let peer = peer_of(&ext);
    let caller = match signed_in(
        &app,
        &headers,
        peer,
        (&Method::GET, &uri),
        Booking::Request,
        AUDITOR,
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(id) = parse_id(&id) else {
        return bad_id();
    };
    let (report, _, suggested) = match read(&app, id).await {
        Ok(Some(found)) => found,
        Ok(None) => return no_incident(id),
        Err(r) => return r,
    };
    let token = form::token(&app, &headers);
    let viewer = Viewer {
        who: &caller.name,
        role: &caller.role,
        form_token: &token,
        admin: ADMIN.contains(&caller.role.as_str()),
    };
    let cx = Context {
        suggested,
        drill: app.watch.is_drill() || report.incident.title.starts_with(DRILL_PREFIX),
        fleet: matches!(app.config.storage, crate::config::Storage::Postgres { .. }),
        now: report.generated_at.0,
    };
    incident_page(&viewer, &report, &cx)
}

/// `GET /ui/incidents/{id}/report.html`, `report.json`, `affected.csv`.
pub(crate) async fn file(
    State(app): State<Arc<App>>,
    ext: Extensions,
    Path((id, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = signed_in(
        &app,
        &headers,
        peer_of(&ext),
        (&Method::GET, &uri),
        Booking::Request,
        AUDITOR,
    )
    .await
    {
        return r;
    }
    let Some(id) = parse_id(&id) else {
        return bad_id();
    };
    if !matches!(
        name.as_str(),
        "report.html" | "report.json" | "affected.csv"
    ) {
        return not_found();
    }
    let (report, impact, _) = match read(&app, id).await {
        Ok(Some(found)) => found,
        Ok(None) => return no_incident(id),
        Err(r) => return r,
    };
    let (body, content_type, disposition) = match name.as_str() {
        "report.html" => (
            tally_incident::report::html(&report),
            "text/html; charset=utf-8",
            format!("inline; filename=\"incident-{id}-report.html\""),
        ),
        "report.json" => (
            format!(
                "{}\n",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            ),
            "application/json",
            format!("inline; filename=\"incident-{id}-report.json\""),
        ),
        _ => (
            tally_incident::report::affected_csv(&impact),
            "text/csv; charset=utf-8",
            format!("attachment; filename=\"incident-{id}-affected.csv\""),
        ),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(REPORT_CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// The fields of the action forms.
#[derive(serde::Deserialize)]
struct ActForm {
    #[serde(default)]
    form_token: String,
    /// The note (`note`).
    #[serde(default)]
    text: String,
    /// Take the suggested steps too (`contain`).
    #[serde(default)]
    apply_suggested: Option<String>,
    /// The digest of the suggested steps the page showed (`contain`).
    #[serde(default)]
    steps: String,
}

/// A responder's action.
enum Action {
    Ack,
    Note(String),
    Contain { apply_suggested: bool },
}

/// `POST /ui/incidents/{id}/ack`, `note`, `contain`: administrators only,
/// with the session's form token, from the dashboard's own pages. Answers
/// `303` to the incident's page once done.
pub(crate) async fn act(
    State(app): State<Arc<App>>,
    ext: Extensions,
    Path((id, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&headers, behind_proxy(&app, &ext)) {
        return cross_site();
    }
    let caller = match signed_in(
        &app,
        &headers,
        peer_of(&ext),
        (&Method::POST, &uri),
        Booking::Request,
        ADMIN,
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(form) = serde_urlencoded::from_bytes::<ActForm>(&body) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Not a form",
            "The request does not carry the incident page's form.",
        );
    };
    if !form::valid(&app, &headers, &form.form_token) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Form refused",
            "The form was not sent from this session's dashboard page (or the session changed since): open the incident's page again and retry.",
        );
    }
    let Some(id) = parse_id(&id) else {
        return bad_id();
    };
    let action = match name.as_str() {
        "ack" => Action::Ack,
        "note" => Action::Note(form.text),
        "contain" => Action::Contain {
            apply_suggested: form.apply_suggested.is_some(),
        },
        _ => return not_found(),
    };
    if let Action::Contain {
        apply_suggested: true,
    } = action
    {
        // The steps taken must be those the administrator saw: new
        // detections (whose actors attackers choose) may have joined the
        // incident since the page was drawn.
        let a = app.clone();
        match tokio::task::spawn_blocking(move || act::suggested(&a.watch.store, id)).await {
            Ok(Ok(now)) if super::incident_page::steps_digest(&now) == form.steps => {}
            Ok(Ok(_)) => {
                return error_page(
                    StatusCode::CONFLICT,
                    "Suggested steps changed",
                    "The steps the incident's detections suggest changed since the page was drawn. Nothing was taken: open the incident's page again, review the steps and retry.",
                );
            }
            Ok(Err(_)) | Err(_) => return unavailable(),
        }
    }
    let actor = format!("{} (dashboard)", caller.name);
    let a = app.clone();
    let by = actor.clone();
    match tokio::task::spawn_blocking(move || run(&a, id, action, &by)).await {
        Ok(Ok(())) => {
            tracing::warn!(event = "incident_action", incident = id, action = %name, actor = ?actor, "incident action taken from the dashboard");
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/ui/incidents/{id}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Ok(Err(e)) => refused(id, &e),
        Err(_) => unavailable(),
    }
}

/// Takes `action` on incident `id` (store calls and containment: run off
/// the async threads).
fn run(app: &App, id: i64, action: Action, actor: &str) -> Result<(), ActError> {
    let store = &app.watch.store;
    let now = app.clock.now();
    match action {
        Action::Ack => act::acknowledge(store, id, actor, now),
        Action::Note(text) => act::note(store, id, &text, actor, now),
        Action::Contain { apply_suggested } => {
            // Each step as the watch takes it (against the data directory),
            // then applied to this server at once.
            let steps = act::contain(store, id, apply_suggested, actor, now, &mut |c, why| {
                Responder::take(app, c, why, actor, now)
            });
            if apply_suggested {
                Responder::reload(app);
            }
            steps.map(|_| ())
        }
    }
}

/// The page answering an action that did not happen.
fn refused(id: i64, e: &ActError) -> Response {
    match e {
        ActError::EmptyNote | ActError::LongNote => error_page(
            StatusCode::BAD_REQUEST,
            "Note not added",
            &format!("Not added: {e}."),
        ),
        ActError::Store(IncidentError::NotFound(_)) => no_incident(id),
        ActError::Store(IncidentError::BadTransition { .. }) => {
            error_page(StatusCode::CONFLICT, "Not possible", &format!("{e}."))
        }
        _ => {
            tracing::error!(incident = id, code = e.code(), error = %e, "an incident action from the dashboard failed");
            unavailable()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn ids_are_digits_only() {
        assert_eq!(parse_id("7"), Some(7));
        assert_eq!(parse_id("007"), Some(7));
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "1e3",
            "x",
            " 1",
            "99999999999999999999",
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }
}
