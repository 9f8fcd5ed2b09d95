//! The shop: synthetic customers (profiles, addresses, order histories)
//! behind an API that checks tokens the way the breached company did, by
//! signature only.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tally_core::jose::ClaimsPolicy;

use tally_server::App;

pub(crate) fn rng(state: &mut u64) -> u64 {
    // splitmix64: deterministic synthetic data from the seed.
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const FIRST: [&str; 12] = [
    "Minjun", "Seoyeon", "Jiho", "Haeun", "Doyun", "Jiwoo", "Ana", "Lukas", "Emma", "Noah",
    "Sofia", "Mateo",
];
const LAST: [&str; 10] = [
    "Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Silva", "Muller", "Rossi", "Novak",
];
const STREETS: [&str; 6] = [
    "Teheran-ro",
    "Sejong-daero",
    "Gangnam-daero",
    "Olympic-ro",
    "Hauptstrasse",
    "Via Roma",
];

/// The customer id of number `i`.
pub fn customer_id(i: usize) -> String {
    format!("c{i:06}")
}

pub(crate) struct Shop {
    pub(crate) app: Arc<App>,
    pub(crate) seed: u64,
    pub(crate) customers: usize,
}

impl Shop {
    fn record(&self, id: &str, kind: &str) -> Option<Value> {
        let n: usize = id.strip_prefix('c')?.parse().ok()?;
        if n == 0 || n > self.customers {
            return None;
        }
        let mut s = self.seed ^ (n as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let first = FIRST[(rng(&mut s) % FIRST.len() as u64) as usize];
        let last = LAST[(rng(&mut s) % LAST.len() as u64) as usize];
        Some(match kind {
            "profile" => json!({
                "id": id, "name": format!("{first} {last}"),
                "email": format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), n),
            }),
            "addresses" => json!({
                "id": id,
                "address": format!("{} {}, Seoul {:05}", rng(&mut s) % 300 + 1,
                    STREETS[(rng(&mut s) % STREETS.len() as u64) as usize], rng(&mut s) % 100_000),
            }),
            _ => json!({
                "id": id,
                "orders": (0..(rng(&mut s) % 4 + 1)).map(|k| json!({
                    "order": format!("o{n}-{k}"), "total_krw": (rng(&mut s) % 500 + 5) * 1000,
                })).collect::<Vec<_>>(),
            }),
        })
    }
}

/// The shop's own check, as the breached company had it: the signature and
/// the claims, nothing else (no ledger).
pub(crate) async fn shop_handler(
    State(shop): State<Arc<Shop>>,
    UrlPath((kind, id)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let keys = shop.app.gate.keys();
    let Ok(vt) = tally_core::jose::verify(token.as_bytes(), &keys) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let policy = ClaimsPolicy::new(
        shop.app.config.issuer.clone(),
        shop.app.config.audience.clone(),
    );
    if policy
        .check(vt.claims(), tally_store::clock::now_unix())
        .is_err()
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if vt.claims().sub.as_deref() != Some(id.as_str()) {
        return StatusCode::FORBIDDEN.into_response();
    }
    match shop.record(&id, &kind) {
        Some(v) => axum::Json(v).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
