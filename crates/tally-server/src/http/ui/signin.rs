//! Signing in and out of the dashboard: `GET /ui/login` (the form),
//! `POST /ui/login` (the issuer's own login, throttles and TOTP included,
//! then the `auditor` or `admin` role; the access token becomes the session
//! cookie) and `POST /ui/logout` (with the session's form token; the token
//! is revoked, not only the cookie cleared).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::form;
use super::session::{COOKIE, behind_proxy, cookie_token, cross_site, same_origin};
use super::views::{LoginPage, error_page, page};
use crate::app::App;
use crate::http::admin::{AUDITOR, Booking, check_role};
use crate::http::login::LoginRequest;
use crate::http::request::{Facts, from_trusted_proxy, peer_of};

/// `GET /ui/login`.
pub(crate) async fn login_page() -> Response {
    login_form(None)
}

fn login_form(error: Option<&str>) -> Response {
    page(&LoginPage { error })
}

#[derive(serde::Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    totp: Option<String>,
}

/// `POST /ui/login` (form): the issuer's login, then the `auditor` or
/// `admin` role.
pub(crate) async fn login(
    State(app): State<Arc<App>>,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&headers, behind_proxy(&app, &ext)) {
        return cross_site();
    }
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return login_form(Some("Fill in user and password."));
    };
    let totp = form.totp.filter(|t| !t.trim().is_empty());
    let req = LoginRequest::new(form.username, form.password, totp);
    let resp = crate::http::login::login(
        State(app.clone()),
        ext.clone(),
        headers.clone(),
        Ok(axum::Json(req)),
    )
    .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            let msg = match e.code() {
                "too_many_attempts" => "Too many failed attempts; wait and retry.",
                "totp_required" | "invalid_totp" => "This account needs a valid one-time code.",
                _ => "Sign-in failed.",
            };
            return login_form(Some(msg));
        }
    };
    let Ok(bytes) = axum::body::to_bytes(resp.into_body(), 64 * 1024).await else {
        return login_form(Some("Sign-in failed."));
    };
    let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (Some(token), Some(ttl)) = (doc["access_token"].as_str(), doc["expires_in"].as_i64())
    else {
        return login_form(Some("Sign-in failed."));
    };
    // The role is checked now too, so a user without one gets a clear
    // answer.
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
        h.insert(header::AUTHORIZATION, v);
    }
    let uri: Uri = "/ui".parse().unwrap_or_default();
    let facts = Facts::read(&app, &h, peer_of(&ext));
    if check_role(&app, &facts, &Method::GET, &uri, Booking::Recheck, AUDITOR)
        .await
        .is_err()
    {
        return login_form(Some("This account is not an administrator or an auditor."));
    }
    let secure = from_trusted_proxy(&app, peer_of(&ext))
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            == Some("https");
    let cookie = format!(
        "{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={ttl}{}",
        if secure { "; Secure" } else { "" }
    );
    let mut r = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static("/ui"))],
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(serde::Deserialize)]
struct LogoutForm {
    #[serde(default)]
    form_token: String,
}

/// `POST /ui/logout`: ends the session (the token is revoked, not only the
/// cookie cleared). The post must carry the session's form token.
pub(crate) async fn logout(
    State(app): State<Arc<App>>,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&headers, behind_proxy(&app, &ext)) {
        return cross_site();
    }
    let presented = serde_urlencoded::from_bytes::<LogoutForm>(&body)
        .map(|f| f.form_token)
        .unwrap_or_default();
    if cookie_token(&headers).is_some() && !form::valid(&app, &headers, &presented) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Form refused",
            "The sign-out was not sent from this session's dashboard page: open the dashboard again and sign out there.",
        );
    }
    if let Some(token) = cookie_token(&headers)
        && let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        // The same request, with the cookie's token as its credential: the
        // decision sees the client's address and device as for any other.
        let mut h = headers.clone();
        h.insert(header::AUTHORIZATION, v);
        let _ = crate::http::sessions::logout(State(app), ext, h).await;
    }
    let mut r = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static("/ui/login"))],
    )
        .into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("tally_ui=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}
