//! The dashboard at `/ui`: server-rendered, no external resources, live
//! through server-sent events (`/ui/events`, one rendering per second), with
//! a page per incident (`/ui/incidents/{id}`).
//!
//! Sign-in goes through the issuer's own login (throttles and TOTP included);
//! the access token it returns is kept in an `HttpOnly`, `SameSite=Strict`
//! cookie scoped to `/ui`, and every page, event stream and form post passes
//! the full gate decision plus the role check of the admin API: the
//! `auditor` or `admin` role to read, `admin` to act on an incident. Every
//! form that changes something carries the session's form token (`form`)
//! and must come from the dashboard's own origin.
//!
//! The HTML comes from askama templates (`templates/ui/`), which escape
//! every value they are given; no HTML is assembled by hand.
//!
//! # Inside
//!
//! `session` (the cookie, the role check, the same-origin check of form
//! posts), `form` (the session's form token), `signin` (sign-in and
//! sign-out), `snapshot` (the typed feed: everything the dashboard shows,
//! read from the app), `views` (the templates and the response they go out
//! in), `dashboard` (`GET /ui`), `feed` (`GET /ui/events` and the process's
//! one rendering task), `incident_page` (an incident's page, from its
//! report) and `incident` (its routes: the page, the report files, the
//! actions).

mod dashboard;
mod feed;
mod form;
mod incident;
mod incident_page;
mod session;
mod signin;
mod snapshot;
mod views;

pub(super) use dashboard::dashboard;
pub(super) use feed::events;
pub(super) use incident::{act as incident_act, file as incident_file, page as incident};
pub(super) use signin::{login, login_page, logout};
