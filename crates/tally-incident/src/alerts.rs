//! Alerts leave through a durable outbox (`incidents.db`): queued in the same
//! moment the fact is stored, delivered at least once, retried with
//! exponential backoff, kept across restarts.
//!
//! * **Webhooks** (`[[webhooks]]`): `POST` of a JSON document with
//!   `X-Tally-Delivery: <outbox id>` (for de-duplication) and
//!   `X-Tally-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." || body)>`.
//!   A receiver recomputes the MAC with its copy of the secret, compares in
//!   constant time, and refuses old timestamps.
//! * **Security Event Tokens** (`[set_receiver]`): RFC 8417 SETs pushed as in
//!   RFC 8935 (`Content-Type: application/secevent+jwt`, success `202`),
//!   signed with tally's events key (published at
//!   `/.well-known/tally-events-jwks.json`, never in the token JWKS). Events:
//!   CAEP `session-revoked` when tally revokes a subject's sessions, and RISC
//!   `credential-compromise` when a subject's refresh token was replayed.

use std::sync::Arc;

use crate::store::{IncidentStore, OutboxItem};
use aws_lc_rs::hmac;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use serde::Deserialize;
use tally_core::jose::SigningKey;
use tally_store::clock::now_unix;

/// CAEP session revoked (OpenID CAEP 1.0).
pub const CAEP_SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// RISC credential compromise (OpenID RISC 1.0).
pub const RISC_CREDENTIAL_COMPROMISE: &str =
    "https://schemas.openid.net/secevent/risc/event-type/credential-compromise";

/// Attempts before an alert is given up (about two days of backoff).
pub const MAX_ATTEMPTS: i64 = 40;

/// `[[webhooks]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Short name (in logs and the outbox).
    pub name: String,
    /// `https://…`, or `http://` on a loopback address.
    pub url: String,
    /// Environment variable holding the HMAC secret (at least 16 characters).
    pub secret_env: String,
}

/// `[set_receiver]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SetReceiverConfig {
    /// Push endpoint.
    pub url: String,
    /// `aud` of the SETs.
    pub audience: String,
    /// Environment variable holding a bearer token for the receiver, if it wants one.
    pub token_env: Option<String>,
}

/// Where the key that signs security events comes from (the data
/// directory's events key): its `kid` and the key, or why there is none.
pub trait EventsKey {
    /// The events key.
    fn events_signer(&self) -> Result<(String, SigningKey), String>;
}

/// One webhook sink.
pub struct Webhook {
    /// Name (the outbox's sink is `webhook:NAME`).
    pub name: String,
    /// Where to POST.
    pub url: String,
    secret: Zeroizing<Vec<u8>>,
}

/// The SET push receiver.
pub struct SetReceiver {
    /// Where to POST.
    pub url: String,
    /// `aud` of the SETs.
    pub audience: String,
    token: Option<Zeroizing<String>>,
}

/// The configured sinks and the HTTP client that reaches them.
pub struct Alerts {
    webhooks: Vec<Webhook>,
    set: Option<SetReceiver>,
    client: reqwest::Client,
    issuer: String,
}

fn checked_url(url: &str, what: &str) -> Result<String, String> {
    let u = url.trim();
    // The host is parsed, not prefix-matched: http://localhost.evil.example
    // and http://127.0.0.1@evil.example are refused.
    if tally_core::endpoint::jwks_url_allowed(u) {
        Ok(u.to_string())
    } else {
        Err(format!(
            "{what} url {u:?} must be https:// (or http:// on a loopback address)"
        ))
    }
}

fn secret_from_env(var: &str, what: &str) -> Result<Zeroizing<String>, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Zeroizing::new(v)),
        _ => Err(format!(
            "{what}: environment variable {var} is empty or unset"
        )),
    }
}

impl Alerts {
    /// Sinks from the configuration; secrets are read from the environment
    /// variables the configuration names (never from the file itself).
    pub fn from_config(
        webhooks_config: &[WebhookConfig],
        set_receiver: Option<&SetReceiverConfig>,
        issuer: &str,
    ) -> Result<Alerts, String> {
        let mut webhooks = Vec::new();
        for w in webhooks_config {
            let secret = secret_from_env(&w.secret_env, &format!("webhook {}", w.name))?;
            if secret.len() < 16 {
                return Err(format!(
                    "webhook {}: the secret in {} must be at least 16 characters",
                    w.name, w.secret_env
                ));
            }
            webhooks.push(Webhook {
                name: w.name.clone(),
                url: checked_url(&w.url, &format!("webhook {}", w.name))?,
                secret: Zeroizing::new(secret.as_bytes().to_vec()),
            });
        }
        let set = match set_receiver {
            None => None,
            Some(s) => Some(SetReceiver {
                url: checked_url(&s.url, "set_receiver")?,
                audience: s.audience.clone(),
                token: s
                    .token_env
                    .as_deref()
                    .map(|v| secret_from_env(v, "set_receiver"))
                    .transpose()?,
            }),
        };
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("alert client: {e}"))?;
        Ok(Alerts {
            webhooks,
            set,
            client,
            issuer: issuer.to_string(),
        })
    }

    /// Whether any sink is configured.
    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty() && self.set.is_none()
    }

    /// Queues `event` (`{"type": ..., ...}`) for every webhook.
    pub fn notify(&self, store: &IncidentStore, kind: &str, mut event: Value, now: i64) {
        if self.webhooks.is_empty() {
            return;
        }
        if let Value::Object(m) = &mut event {
            m.insert("type".into(), Value::from(kind));
            m.insert("at".into(), Value::from(now));
            m.insert("issuer".into(), Value::from(self.issuer.clone()));
        }
        let body = event.to_string();
        for w in &self.webhooks {
            if let Err(e) = store.enqueue(
                &format!("webhook:{}", w.name),
                "application/json",
                body.as_bytes(),
                now,
            ) {
                tracing::error!(code = e.code(), error = %e, sink = %w.name, "alert not queued");
            }
        }
    }

    /// Signs and queues a SET with one event about `subject` (`iss_sub`).
    pub fn security_event(
        &self,
        key: &dyn EventsKey,
        store: &IncidentStore,
        event_type: &str,
        subject: &str,
        payload: Value,
        now: i64,
    ) {
        let Some(set) = &self.set else {
            return;
        };
        let (kid, key) = match key.events_signer() {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "no events key: security event not sent");
                return;
            }
        };
        let mut jti = [0u8; 16];
        let _ =
            aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut jti);
        let mut claims = Map::new();
        claims.insert("iss".into(), Value::from(self.issuer.clone()));
        claims.insert("aud".into(), Value::from(set.audience.clone()));
        claims.insert("iat".into(), Value::from(now));
        claims.insert(
            "jti".into(),
            Value::from(jti.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        );
        claims.insert(
            "sub_id".into(),
            json!({"format": "iss_sub", "iss": self.issuer, "sub": subject}),
        );
        let mut ev = payload;
        if let Value::Object(m) = &mut ev {
            m.insert("event_timestamp".into(), Value::from(now));
        }
        claims.insert("events".into(), json!({ event_type: ev }));
        match key.sign_jwt(&kid, "secevent+jwt", &claims) {
            Ok(token) => {
                if let Err(e) =
                    store.enqueue("set", "application/secevent+jwt", token.as_bytes(), now)
                {
                    tracing::error!(code = e.code(), error = %e, "security event not queued");
                }
            }
            Err(e) => tracing::error!(error = %e, "security event not signed"),
        }
    }

    /// Attempts every due delivery once.
    pub async fn deliver_due(self: &Arc<Self>, store: &Arc<IncidentStore>) {
        let now = now_unix();
        let s = store.clone();
        let due = match tokio::task::spawn_blocking(move || s.due(now, 100)).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::error!(code = e.code(), error = %e, "alert outbox unreadable");
                return;
            }
            Err(_) => return,
        };
        // One task per sink, so that an unreachable receiver delays only its
        // own alerts; within a sink, alerts go in order and the round stops at
        // the first failure (the rest wait for their backoff).
        let mut by_sink: std::collections::BTreeMap<String, Vec<OutboxItem>> = Default::default();
        for item in due {
            by_sink.entry(item.sink.clone()).or_default().push(item);
        }
        let mut set = tokio::task::JoinSet::new();
        for (_, items) in by_sink {
            let (me, store) = (self.clone(), store.clone());
            set.spawn(async move {
                for item in items {
                    if !me.settle(&store, item).await {
                        break;
                    }
                }
            });
        }
        while set.join_next().await.is_some() {}
    }

    /// One delivery attempt and its bookkeeping; true if it was delivered.
    async fn settle(&self, store: &Arc<IncidentStore>, item: OutboxItem) -> bool {
        let outcome = self.deliver(&item).await;
        let delivered = outcome.is_ok();
        let s = store.clone();
        let now = now_unix();
        let id = item.id;
        let attempts = item.attempts + 1;
        let sink = item.sink.clone();
        let _ = tokio::task::spawn_blocking(move || match outcome {
            Ok(()) => {
                tracing::info!(event = "alert_delivered", id, sink = %sink, attempts, "alert delivered");
                s.delivered(id, now)
            }
            Err(e) if attempts >= MAX_ATTEMPTS => {
                tracing::error!(event = "alert_failed", id, sink = %sink, attempts, error = %e, "alert given up");
                s.attempt_failed(id, now, None, &e)
            }
            Err(e) => {
                let wait = 1i64 << attempts.clamp(0, 12);
                tracing::warn!(event = "alert_retry", id, sink = %sink, attempts, retry_in = wait.min(3600), error = %e, "alert not delivered; retrying");
                s.attempt_failed(id, now, Some(now + wait.min(3600)), &e)
            }
        })
        .await;
        delivered
    }

    async fn deliver(&self, item: &OutboxItem) -> Result<(), String> {
        let mut req;
        if let Some(name) = item.sink.strip_prefix("webhook:") {
            let Some(w) = self.webhooks.iter().find(|w| w.name == name) else {
                return Err(format!("webhook {name} is no longer configured"));
            };
            let t = now_unix();
            let key = hmac::Key::new(hmac::HMAC_SHA256, &w.secret);
            let mut ctx = hmac::Context::with_key(&key);
            ctx.update(format!("{t}.").as_bytes());
            ctx.update(&item.body);
            let mac: String = ctx
                .sign()
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            req = self
                .client
                .post(&w.url)
                .header("x-tally-signature", format!("t={t},v1={mac}"));
        } else if item.sink == "set" {
            let Some(s) = &self.set else {
                return Err("the SET receiver is no longer configured".into());
            };
            req = self
                .client
                .post(&s.url)
                .header("accept", "application/json");
            if let Some(token) = &s.token {
                req = req.bearer_auth(token.as_str());
            }
        } else {
            return Err(format!("unknown sink {}", item.sink));
        }
        req = req
            .header("content-type", item.content_type.as_str())
            .header("x-tally-delivery", item.id.to_string())
            .body(item.body.clone());
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("receiver answered {}", r.status())),
            Err(e) => Err(format!(
                "receiver unreachable ({})",
                if e.is_timeout() {
                    "timeout"
                } else {
                    "connection failed"
                }
            )),
        }
    }
}
