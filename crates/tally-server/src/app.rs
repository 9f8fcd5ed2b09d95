//! The application: shared state, the router, and the background tasks.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tally_core::gate::Gate;
use tally_core::jose::ClaimsPolicy;
use tally_core::registry::Registry;
use tally_store::Ledger;

use crate::config::Config;
use crate::datadir::DataDir;
use crate::keys::{ActiveKey, KeyRing, now_unix};
use crate::metrics::Metrics;
use crate::{gate_http, issuer, ledger_http, meta_http};

/// Failure to start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Everything the handlers share.
pub struct App {
    /// Runtime configuration.
    pub config: Config,
    /// The data directory (state store, master key).
    pub dir: DataDir,
    /// The ledger.
    pub ledger: Arc<Ledger>,
    /// The gate's decision procedure (owns the registry).
    pub gate: Arc<Gate>,
    /// The key that signs new tokens.
    pub active: RwLock<Arc<ActiveKey>>,
    /// Counters.
    pub metrics: Metrics,
    /// A real argon2id hash used when the user does not exist, so that unknown
    /// and known users take the same time.
    pub dummy_hash: String,
    /// Bounds concurrent password hashing (argon2id takes 19 MiB and tens of
    /// milliseconds each): one slot per core.
    pub password_slots: tokio::sync::Semaphore,
    state_version: AtomicI64,
}

impl App {
    /// Opens (or creates) the data directory, verifies the whole ledger,
    /// rebuilds the registry and loads the keys.
    pub fn open(
        config: Config,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Arc<App>, StartError> {
        let dir = DataDir::open_or_init(&config.data).map_err(|e| StartError(e.to_string()))?;
        let ring = KeyRing::load(&dir.state, &dir.master).map_err(|e| StartError(e.to_string()))?;
        let signer = dir.ledger_signer().map_err(|e| StartError(e.to_string()))?;
        let registry = Arc::new(Registry::new());
        let cutoff = now_unix() - config.leeway_secs;
        let reg = registry.clone();
        let ledger = Ledger::open(&dir.ledger_path(), signer, progress, &mut |_, rec| {
            if rec.expires_at > cutoff {
                reg.insert(&rec.token_sha256, rec.expires_at);
            }
        })
        .map_err(|e| match &e {
            tally_store::LedgerError::Tampered { .. } => StartError(format!(
                "{e}\nThe ledger no longer matches what tally wrote and signed; refusing to start. \
                 Preserve the data directory as evidence, run `tally ledger verify` for details, \
                 and restore the ledger from backup."
            )),
            _ => StartError(format!("cannot open the ledger: {e}")),
        })?;
        let policy = ClaimsPolicy {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway_secs: config.leeway_secs,
            require_exp: true,
        };
        let gate = Arc::new(Gate::new(ring.keyset, policy, registry));
        let version = dir.state.data_version().unwrap_or(0);
        let dummy_hash = issuer::hash_password(&keys_dummy_password())
            .map_err(|e| StartError(format!("password hashing failed: {}", e.code())))?;
        Ok(Arc::new(App {
            config,
            dir,
            ledger: Arc::new(ledger),
            gate,
            active: RwLock::new(ring.active),
            metrics: Metrics::default(),
            dummy_hash,
            password_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 16)),
            ),
            state_version: AtomicI64::new(version),
        }))
    }

    /// The key that signs new tokens.
    pub fn active_key(&self) -> Arc<ActiveKey> {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads keys if another process changed the state store. Returns true
    /// when a reload happened.
    pub fn reload_keys_if_changed(&self) -> bool {
        let Ok(v) = self.dir.state.data_version() else {
            return false;
        };
        if v == self.state_version.load(Ordering::SeqCst) {
            return false;
        }
        match KeyRing::load(&self.dir.state, &self.dir.master) {
            Ok(ring) => {
                // Only a successful load moves the version on: a failed one is
                // retried on the next tick.
                self.state_version.store(v, Ordering::SeqCst);
                *self.active.write().unwrap_or_else(|e| e.into_inner()) = ring.active;
                self.gate.set_keys(ring.keyset);
                tracing::info!(kid = %self.active_key().kid, "signing keys reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "key reload failed; keeping the previous keys and retrying");
                false
            }
        }
    }

    /// Drops expired registry and cache entries.
    pub fn evict(&self) {
        let cutoff = now_unix() - self.config.leeway_secs;
        let a = self.gate.registry().evict_expired(cutoff);
        let b = self.gate.evict_seen(cutoff);
        if a + b > 0 {
            tracing::debug!(registry = a, seen = b, "evicted expired tokens");
        }
    }
}

fn keys_dummy_password() -> String {
    crate::keys::random_hex(16)
}

/// The HTTP routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(meta_http::healthz))
        .route("/readyz", get(meta_http::readyz))
        .route("/metrics", get(meta_http::metrics))
        .route("/openapi.json", get(meta_http::openapi))
        .route("/.well-known/jwks.json", get(meta_http::jwks))
        .route("/v1/login", post(issuer::login))
        .route("/v1/check", get(gate_http::check))
        .route("/v1/ledger/checkpoint", get(ledger_http::checkpoint))
        .route("/v1/ledger/key", get(ledger_http::key))
        .route("/v1/ledger/proof/inclusion", get(ledger_http::inclusion))
        .route(
            "/v1/ledger/proof/consistency",
            get(ledger_http::consistency),
        )
        .route("/v1/ledger/entries", get(ledger_http::entries))
        .fallback(meta_http::not_found)
        // Every request body tally accepts is small JSON.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(app)
}

/// Starts the background tasks: key reload (every 250 ms, so admin changes
/// reach the server within a second) and expiry eviction.
pub fn spawn_background(app: &Arc<App>) {
    let a = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let a2 = a.clone();
            let _ = tokio::task::spawn_blocking(move || a2.reload_keys_if_changed()).await;
        }
    });
    let a = app.clone();
    tokio::spawn(async move {
        // The ledger writer re-verifies whenever another connection committed
        // to ledger.db; asking every second reports tampering within a second
        // even when no token is being issued.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut reported = false;
        loop {
            tick.tick().await;
            match a.ledger.audit().await {
                Err(e @ tally_store::LedgerError::Tampered { .. }) if !reported => {
                    reported = true;
                    tracing::error!(
                        code = e.code(),
                        finding = %e,
                        "ledger tampered: issuance stopped; preserve the data directory as evidence"
                    );
                }
                Err(tally_store::LedgerError::Closed) => break,
                _ => {}
            }
        }
    });
    let a = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            a.evict();
        }
    });
}

/// Serves until `shutdown` resolves, then drains in-flight requests and closes
/// the ledger (every acknowledged record is already durable).
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    spawn_background(&app);
    let result = axum::serve(listener, router(app.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    let ledger = app.ledger.clone();
    let _ = tokio::task::spawn_blocking(move || ledger.close()).await;
    result
}
