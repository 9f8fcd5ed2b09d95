//! The HTTP interface: the API's routes and handlers, and the gate as a
//! reverse proxy. A request's facts (credentials, client address, original
//! target) are read once ([`request`]); the gate's decision over HTTP is
//! [`decide`]; answers about a token are [`respond`].

mod admin;
mod check;
mod decide;
mod external;
mod guard;
mod ledger;
mod login;
mod meta;
mod proxy;
mod request;
mod respond;
mod router;
mod sessions;
mod ui;

pub(crate) use proxy::{Proxy, router as proxy_router};
pub use router::router;
