//! The dashboard at `/ui`: server-rendered, no external resources, live
//! through server-sent events (`/ui/events`, one rendering per second).
//!
//! Sign-in goes through the issuer's own login (throttles and TOTP included);
//! the access token it returns is kept in an `HttpOnly`, `SameSite=Strict`
//! cookie scoped to `/ui`, and every page and event stream passes the full
//! gate decision plus the `admin` role check of the admin API. The pages only
//! read; the only forms are sign-in and sign-out.
//!
//! The HTML comes from askama templates (`templates/ui/`), which escape
//! every value they are given; no HTML is assembled by hand.
//!
//! # Inside
//!
//! `session` (the cookie, the admin check, the same-origin check of form
//! posts), `signin` (sign-in and sign-out), `snapshot` (the typed feed:
//! everything the dashboard shows, read from the app), `views` (the
//! templates and the response they go out in), `dashboard` (`GET /ui`) and
//! `feed` (`GET /ui/events` and the process's one rendering task).

mod dashboard;
mod feed;
mod session;
mod signin;
mod snapshot;
mod views;

pub(super) use dashboard::dashboard;
pub(super) use feed::events;
pub(super) use signin::{login, login_page, logout};
