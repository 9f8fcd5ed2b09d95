//! The application: shared state, the router, and the background tasks.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use tally_core::gate::Gate;
use tally_core::jose::ClaimsPolicy;
use tally_core::registry::Registry;
use tally_store::{Ledger, LedgerStore};

use crate::config::Config;
use crate::keyring::{ActiveKey, KeyRing};
use crate::keyring::{DataDir, DataDirLock};
use crate::metrics::Metrics;
use tally_store::clock::Clock;

/// Failure to start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Everything the handlers share.
pub struct App {
    /// The one clock: handlers read it once per request.
    pub clock: Clock,
    /// Runtime configuration.
    pub config: Config,
    /// The data directory (state store, master key).
    pub dir: DataDir,
    /// The ledger: embedded, or shared by a fleet.
    pub ledger: Arc<dyn LedgerStore>,
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
    /// milliseconds each): one slot per core, each with argon2 memory of its
    /// own that every hash in it reuses.
    pub passwords: Arc<crate::passwords::Pool>,
    state_version: AtomicI64,
    /// External issuers (identity providers registering their tokens).
    pub externals: crate::external::Externals,
    /// Signature accounts per key (signed vs recorded).
    pub accounts: crate::keyring::Accounts,
    /// tally's own verifying keys (what the JWKS publishes).
    pub own_keys: RwLock<tally_core::jose::KeySet>,
    /// The hash-chained access log (`access.db`).
    pub access_log: Arc<tally_incident::access::AccessLog>,
    /// The queue to it (started with the server's runtime).
    pub access_events: std::sync::OnceLock<tally_incident::access::AccessEvents>,
    /// What the listeners count: open, accepted and refused connections.
    pub connections: Arc<crate::listener::ConnectionStats>,
    /// The detector, detections and incidents.
    pub watch: Arc<tally_incident::watch::Watch>,
    /// Webhooks and the SET receiver.
    pub alerts: Arc<tally_incident::alerts::Alerts>,
    /// In a fleet, this node's own outbox (`incidents.db` in its directory)
    /// for alerts about the shared store itself, which must go out while
    /// that store is unreachable.
    pub node_outbox: Option<Arc<tally_incident::store::IncidentStore>>,
    /// Ledger size last seen and since when (unix seconds): the age of the
    /// latest checkpoint, which is signed with every committed batch.
    ledger_seen: std::sync::Mutex<(u64, i64)>,
    /// The dashboard's rendered sections, shared by every open dashboard
    /// (see `ui::feed`).
    pub ui_feed: std::sync::OnceLock<tokio::sync::watch::Receiver<Arc<String>>>,
    /// One incident report at a time from the dashboard: each reads the
    /// whole access log (see `ui::incident`).
    pub ui_reports: Arc<tokio::sync::Semaphore>,
    /// Registry misses (each a signature verification) per client address.
    pub miss_limiter: tally_core::ratelimit::RateLimiter<std::net::IpAddr>,
    /// Examinations of the unknown tokens of requests refused by
    /// containment, per client address (see `http::decide`)...
    pub blocked_examinations: tally_core::ratelimit::RateLimiter<std::net::IpAddr>,
    /// ...and for all blocked clients together.
    pub blocked_examinations_total: tally_core::ratelimit::RateLimiter<()>,
    /// Forged tokens the ledger store has already said it never issued.
    pub misses: tally_core::misses::Misses,
    /// DPoP proofs already used (RFC 9449 replay protection).
    pub dpop_replay: tally_core::dpop::ReplayCache,
    /// DPoP server nonces, when `dpop_nonce = true`. Keyed per process: a
    /// client that moves to another node is asked for a new nonce once.
    pub dpop_nonces: Option<tally_core::dpop_nonce::NonceSource>,
    /// Containment: the blocks in force.
    pub blocks: RwLock<Arc<tally_core::containment::BlockList>>,
    /// Backoff for logins and client authentication: per (subject, address)
    /// 5 free failures, per address 50, per subject 20 except at the
    /// subject's known addresses (then exponential; see `guard`).
    pub guard: tally_core::throttle::Guard,
    /// Highest revocation sequence number applied to the registry.
    revocation_seq: AtomicI64,
    /// Per key, the latest `exp` of a token it signed (from the ledger).
    last_expiry: Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
    /// Forged tokens seen per key since the last flush: `(count, first, last)`.
    sightings: std::sync::Mutex<std::collections::HashMap<String, (u64, i64, i64)>>,
    /// The data directory's exclusive lock, held as long as the app lives.
    _lock: DataDirLock,
}

impl App {
    /// Opens (or creates) the data directory and takes its exclusive lock
    /// (naming `config.listen` as this server's address), verifies the
    /// whole ledger, rebuilds the registry and loads the keys.
    pub fn open(
        config: Config,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Arc<App>, StartError> {
        let start = |e: crate::keyring::DataDirError| StartError(e.to_string());
        DataDir::create(&config).map_err(start)?;
        let lock = DataDirLock::acquire(&config.data).map_err(start)?;
        lock.describe(&config.listen.to_string()).map_err(start)?;
        App::open_locked(config, lock, progress)
    }

    /// [`App::open`] with the data directory's lock already taken (and
    /// described) by the caller.
    pub fn open_locked(
        config: Config,
        lock: DataDirLock,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Arc<App>, StartError> {
        App::open_locked_at(config, lock, Clock::system(), progress)
    }

    /// [`App::open_locked`] with the clock the server reads (a fixed one in
    /// tests).
    pub fn open_locked_at(
        mut config: Config,
        lock: DataDirLock,
        clock: Clock,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Arc<App>, StartError> {
        let dir = DataDir::open_or_init(&config).map_err(|e| StartError(e.to_string()))?;
        // The issuer is the data directory's, fixed at its first run: a
        // restart on another address keeps honouring the tokens it issued.
        config.issuer = dir
            .issuer(
                config.issuer_configured.then_some(config.issuer.as_str()),
                &format!("http://{}", config.listen),
            )
            .map_err(|e| StartError(e.to_string()))?;
        if let Some(i) = config.issuers.iter().find(|i| i.iss == config.issuer) {
            return Err(StartError(format!(
                "configuration error: [[issuers]] {:?}: iss {:?} is tally's own issuer (fixed in {}); \
                 an external issuer must use another",
                i.name,
                i.iss,
                config.data.display()
            )));
        }
        let signer = dir.ledger_signer().map_err(|e| StartError(e.to_string()))?;
        let registry = Arc::new(Registry::new());
        let last_expiry = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
            String,
            i64,
        >::new()));
        let (ledger, recorded) = open_ledger(
            &config,
            &clock,
            &dir,
            signer,
            &registry,
            &last_expiry,
            progress,
        )?;
        let accounts = crate::keyring::Accounts::load_for(
            &dir.state,
            &recorded,
            match &config.storage {
                crate::config::Storage::Postgres { node, .. } => Some(node.as_str()),
                crate::config::Storage::Embedded => None,
            },
        )
        .map_err(|e| StartError(format!("signature counts: {e}")))?;
        let ring_expiry = last_expiry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let ring = KeyRing::load(
            &dir,
            clock.now(),
            config.leeway_secs,
            &|kid| ring_expiry.get(kid).copied(),
            &accounts,
        )
        .map_err(|e| StartError(e.to_string()))?;
        let policy = ClaimsPolicy {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            also_audiences: config.route_audiences(),
            leeway_secs: config.leeway_secs,
            require_exp: true,
        };
        // Outbound HTTPS (JWKS URLs) uses rustls with AWS-LC, like everything else.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let externals = crate::external::Externals::load(&config.issuers).map_err(StartError)?;
        let miss_limiter = tally_core::ratelimit::RateLimiter::new(
            config.miss_rate_per_sec,
            config.miss_burst,
            100_000,
        );
        let blocked_examinations = tally_core::ratelimit::RateLimiter::new(
            config.blocked_examine_per_sec,
            config.blocked_examine_burst,
            100_000,
        );
        let blocked_examinations_total = tally_core::ratelimit::RateLimiter::new(
            config.blocked_examine_total_per_sec,
            config.blocked_examine_total_burst,
            1,
        );
        let access_log = Arc::new(
            tally_incident::access::AccessLog::open(&dir.path.join("access.db"))
                .map_err(|e| StartError(format!("cannot open the access log: {e}")))?,
        );
        let gate = Arc::new(Gate::new(tally_core::jose::KeySet::new(), policy, registry));
        let (merged, bound) = externals.merge_into(&ring.keyset);
        gate.set_trust(merged, bound);
        let own_keys = RwLock::new(ring.keyset);
        let version = dir.state.data_version().unwrap_or(0);
        let passwords = crate::passwords::Pool::new(
            std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 16)),
        );
        let dummy_hash = passwords
            .try_slot()
            .ok_or_else(|| StartError("no password hashing slot".into()))?
            .hash(&keys_dummy_password())
            .map_err(|e| StartError(e.to_string()))?;
        let incidents = Arc::new(
            dir.incidents()
                .map_err(|e| StartError(format!("incident store: {e}")))?,
        );
        let watch = tally_incident::watch::Watch::new(
            incidents,
            config.detector.clone(),
            config.actions.clone(),
            config.regimes.clone(),
        );
        // Dev mode (`tally serve --dev`): every incident is a drill.
        let watch = Arc::new(if config.drill { watch.drill() } else { watch });
        {
            // A state row refused for its MAC opens an incident.
            let w = watch.clone();
            dir.state.on_tamper(move |what| {
                tracing::error!(
                    event = "state_tampered",
                    row = what,
                    "a state row fails its MAC: it was written by someone with database access but not the master key; it is refused"
                );
                w.signal(tally_incident::detect::Signal::StateTampered {
                    detail: what.to_string(),
                });
            });
        }
        if let Some(redis) = &config.redis {
            let namespace = match &config.storage {
                crate::config::Storage::Postgres { schema, .. } => schema.clone(),
                crate::config::Storage::Embedded => "tally".into(),
            };
            watch.count_across_fleet(
                redis.clone(),
                namespace,
                &dir.master.derive("detector/fleet-hash"),
            );
        }
        let alerts = Arc::new(
            tally_incident::alerts::Alerts::from_config(
                &config.webhooks,
                config.set_receiver.as_ref(),
                &config.issuer,
            )
            .map_err(StartError)?,
        );
        let node_outbox = match config.storage {
            crate::config::Storage::Embedded => None,
            crate::config::Storage::Postgres { .. } => Some(Arc::new(
                tally_incident::store::IncidentStore::open(&dir.path)
                    .map_err(|e| StartError(format!("this node's outbox (incidents.db): {e}")))?,
            )),
        };
        let dpop_nonces = if config.dpop_nonce {
            let mut secret = [0u8; 32];
            aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut secret)
                .map_err(|_| StartError("no randomness for DPoP nonces".into()))?;
            Some(tally_core::dpop_nonce::NonceSource::new(
                &secret,
                DPOP_NONCE_WINDOW_SECS,
            ))
        } else {
            None
        };
        let opened_at = clock.now();
        Ok(Arc::new(App {
            clock,
            config,
            dir,
            ledger,
            gate,
            active: RwLock::new(ring.active),
            metrics: Metrics::default(),
            dummy_hash,
            passwords,
            state_version: AtomicI64::new(version),
            externals,
            own_keys,
            accounts,
            blocks: RwLock::new(Arc::new(tally_core::containment::BlockList::default())),
            dpop_replay: tally_core::dpop::ReplayCache::new(1 << 20),
            misses: tally_core::misses::Misses::new(100_000, 300),
            dpop_nonces,
            access_log,
            access_events: std::sync::OnceLock::new(),
            connections: Arc::default(),
            watch,
            alerts,
            node_outbox,
            ledger_seen: std::sync::Mutex::new((0, opened_at)),
            ui_feed: std::sync::OnceLock::new(),
            ui_reports: Arc::new(tokio::sync::Semaphore::new(1)),
            miss_limiter,
            blocked_examinations,
            blocked_examinations_total,
            guard: tally_core::throttle::Guard::new(Default::default()),
            revocation_seq: AtomicI64::new(0),
            last_expiry,
            sightings: std::sync::Mutex::new(std::collections::HashMap::new()),
            _lock: lock,
        }))
        .inspect(|app| {
            app.reload_blocks();
            if let Err(e) = app.apply_revocations() {
                tracing::error!(error = %e, "revocations could not be loaded at start");
            }
        })
    }

    /// Applies revocations recorded since the last call to the registry.
    /// Returns how many were applied.
    pub fn apply_revocations(&self) -> Result<usize, tally_store::StateError> {
        let after = self.revocation_seq.load(Ordering::SeqCst);
        let new = self.dir.state.revocations_after(after)?;
        let mut applied = 0;
        for (seq, r) in &new {
            let digest = tally_core::digest::TokenDigest::from_bytes(r.token_sha256);
            // Remembered even before the record arrives (a fleet's follower
            // may deliver it later): the record can never make it live again.
            if r.expires_at > self.clock.now() - self.config.leeway_secs
                && self.gate.registry().revoke_until(&digest, r.expires_at)
            {
                applied += 1;
            }
            self.revocation_seq.fetch_max(*seq, Ordering::SeqCst);
        }
        if !new.is_empty() {
            tracing::info!(revoked = new.len(), live = applied, "revocations applied");
        }
        Ok(applied)
    }

    /// The blocks in force.
    pub fn blocks(&self) -> Arc<tally_core::containment::BlockList> {
        self.blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads the block list from the state store (a malformed row is
    /// skipped and reported; the rest stay in force).
    pub fn reload_blocks(&self) {
        use tally_core::containment::{Block, BlockList, BlockTarget, Cidr};
        let rows = match self.dir.state.blocks(self.clock.now()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "blocks could not be read; keeping the previous list");
                return;
            }
        };
        let mut blocks = Vec::with_capacity(rows.len());
        for r in rows {
            let target = match r.kind.as_str() {
                "ip" => match Cidr::parse(&r.value) {
                    Ok(c) => BlockTarget::Cidr(c),
                    Err(e) => {
                        tracing::error!(id = r.id, error = %e, "unusable block skipped");
                        continue;
                    }
                },
                "device" => BlockTarget::Device(r.value),
                "subject" => BlockTarget::Subject(r.value),
                "token" => BlockTarget::Token(r.value),
                other => {
                    tracing::error!(id = r.id, kind = other, "unknown block kind skipped");
                    continue;
                }
            };
            blocks.push(Block {
                id: r.id,
                target,
                reason: r.reason,
                expires_at: r.expires_at,
            });
        }
        let list = BlockList::new(blocks);
        let mut cur = self.blocks.write().unwrap_or_else(|e| e.into_inner());
        if **cur != list {
            tracing::info!(blocks = list.len(), "block list reloaded");
            *cur = Arc::new(list);
        }
    }

    /// Records that `kid` signed a token valid until `expires_at`.
    pub fn signed_until(&self, kid: &str, expires_at: i64) {
        let mut m = self.last_expiry.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(kid.to_string()).or_insert(expires_at);
        *e = (*e).max(expires_at);
    }

    fn last_expiry_of(&self, kid: &str) -> Option<i64> {
        self.last_expiry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(kid)
            .copied()
    }

    /// Counts a forged token seen under `kid` (flushed to the state store every second).
    pub fn saw_forgery(&self, kid: &str, now: i64) {
        let mut m = self.sightings.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(kid.to_string()).or_insert((0, now, now));
        e.0 += 1;
        e.1 = e.1.min(now);
        e.2 = e.2.max(now);
    }

    /// Writes the pending forgery sightings to the state store.
    pub fn flush_sightings(&self) {
        let pending: Vec<(String, u64, i64, i64)> = {
            let mut m = self.sightings.lock().unwrap_or_else(|e| e.into_inner());
            m.drain().map(|(k, (c, f, l))| (k, c, f, l)).collect()
        };
        if pending.is_empty() {
            return;
        }
        if let Err(e) = self.dir.state.add_forgery_sightings(&pending) {
            tracing::error!(error = %e, "forgery sightings not recorded; keeping them for the next try");
            let mut m = self.sightings.lock().unwrap_or_else(|e| e.into_inner());
            for (k, c, f, l) in pending {
                let e = m.entry(k).or_insert((0, f, l));
                e.0 += c;
                e.1 = e.1.min(f);
                e.2 = e.2.max(l);
            }
        }
    }

    /// Rotation at maximum age and retirement of keys whose tokens have all
    /// expired; reloads the keys when something changed.
    pub fn maintain_keys(&self) {
        let now = self.clock.now();
        // In a fleet one node rotates and retires keys: the sequencer (every
        // node would otherwise rotate the same key at its maximum age).
        let maintenance = if self.ledger.is_sequencer() {
            crate::keyring::lifecycle::maintain(
                &self.dir,
                self.config.key_max_age_secs,
                self.config.leeway_secs,
                &|kid| self.last_expiry_of(kid),
                now,
            )
        } else {
            Ok(Default::default())
        };
        match maintenance {
            Ok(m) => {
                if let Some(r) = &m.rotated {
                    tracing::warn!(
                        old = r.old.as_deref().unwrap_or(""),
                        new = %r.new,
                        "signing key reached its maximum age: rotated"
                    );
                }
                for kid in &m.retired {
                    tracing::info!(kid = %kid, "key retired: no token it signed can still be valid");
                }
            }
            Err(e) => tracing::error!(error = %e, "key maintenance failed"),
        }
        // What maintenance should have prevented: the key that signs now is
        // past its maximum age, or guarded by someone who has left.
        if let Ok(Some(active)) = crate::keyring::lifecycle::active_key(&self.dir) {
            let age = now - active.created_at;
            if age > self.config.key_max_age_secs + 3600 {
                self.watch
                    .signal(tally_incident::detect::Signal::KeyTooOld {
                        kid: active.kid.clone(),
                        age_secs: age,
                    });
            }
            for person in self
                .dir
                .state
                .former_custodians(&active.kid)
                .unwrap_or_default()
            {
                self.watch
                    .signal(tally_incident::detect::Signal::DepartedCustodianKey {
                        kid: active.kid.clone(),
                        custodian: person,
                    });
            }
        }
        self.externals.refresh();
        // Our own writes do not move data_version, a compromised key can stop
        // verifying (its last token expired) without any write, and an
        // external issuer's JWKS may have changed: reload.
        self.reload_keys(true);
    }

    /// The ledger's size and when it last changed (as this process saw it,
    /// within a second: the maintenance tick looks every second).
    pub fn ledger_progress(&self) -> (u64, i64) {
        let size = self.ledger.size();
        let mut seen = self.ledger_seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.0 != size {
            *seen = (size, self.clock.now());
        }
        *seen
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
        self.reload_keys(false)
    }

    /// Reloads keys (always with `force`, else only if state.db changed).
    pub fn reload_keys(&self, force: bool) -> bool {
        let Ok(v) = self.dir.state.data_version() else {
            return false;
        };
        if !force && v == self.state_version.load(Ordering::SeqCst) {
            return false;
        }
        if let Err(e) = self.apply_revocations() {
            tracing::error!(error = %e, "revocations could not be read; retrying");
            return false;
        }
        self.reload_blocks();
        match KeyRing::load(
            &self.dir,
            self.clock.now(),
            self.config.leeway_secs,
            &|kid| self.last_expiry_of(kid),
            &self.accounts,
        ) {
            Ok(ring) => {
                // Only a successful load moves the version on: a failed one is
                // retried on the next tick.
                self.state_version.store(v, Ordering::SeqCst);
                let changed_active = self.active_key().kid != ring.active.kid;
                if changed_active {
                    *self.active.write().unwrap_or_else(|e| e.into_inner()) = ring.active;
                }
                // Replacing the key set forgets remembered verifications: only
                // when it really changed.
                let (merged, bound) = self.externals.merge_into(&ring.keyset);
                let changed_keys = *self.gate.keys() != merged;
                if changed_keys {
                    self.gate.set_trust(merged, bound);
                }
                *self.own_keys.write().unwrap_or_else(|e| e.into_inner()) = ring.keyset;
                if changed_active || changed_keys {
                    tracing::info!(kid = %self.active_key().kid, "signing keys reloaded");
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "key reload failed; keeping the previous keys and retrying");
                false
            }
        }
    }

    /// Reports the shared store going away or coming back: a log line, an
    /// alert to every webhook, and `/readyz` follows on its own.
    pub(crate) fn store_transition(&self, reachable: bool) {
        let now = self.clock.now();
        if reachable {
            tracing::warn!(
                backend = self.ledger.backend(),
                "ledger store reachable again: issuance and unknown tokens are decided again"
            );
        } else {
            tracing::error!(
                backend = self.ledger.backend(),
                "ledger store unreachable: failing closed (issuance 503, unknown tokens `unavailable`); \
                 tokens already in the registry keep working"
            );
        }
        self.alerts.notify(
            self.node_outbox.as_ref().unwrap_or(&self.watch.store),
            if reachable {
                "store_recovered"
            } else {
                "store_unavailable"
            },
            serde_json::json!({
                "backend": self.ledger.backend(),
                "registry_tokens": self.gate.registry().len(),
            }),
            now,
        );
    }

    /// Drops expired registry and cache entries.
    pub fn evict(&self) {
        let cutoff = self.clock.now() - self.config.leeway_secs;
        let a = self.gate.registry().evict_expired(cutoff);
        let b = self.gate.evict_seen(cutoff);
        if a + b > 0 {
            tracing::debug!(registry = a, seen = b, "evicted expired tokens");
        }
    }
}

/// What [`open_ledger`] learnt while reading the ledger: records per key
/// (this node's own, in a fleet).
type Recorded = std::collections::HashMap<String, u64>;

/// Opens the configured ledger, verifying it and filling the registry with
/// every unexpired token; a fleet node goes on following new records.
fn open_ledger(
    config: &Config,
    clock: &Clock,
    dir: &DataDir,
    signer: tally_core::note::NoteSigner,
    registry: &Arc<Registry>,
    last_expiry: &Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Arc<dyn LedgerStore>, Recorded), StartError> {
    let leeway = config.leeway_secs;
    // A record's effect on this node: its token is live until it expires.
    let learn = {
        let registry = registry.clone();
        let last_expiry = last_expiry.clone();
        let clock = clock.clone();
        move |rec: &tally_core::record::IssuanceRecord| {
            if rec.expires_at > clock.now() - leeway {
                registry.insert(&rec.token_sha256, rec.expires_at);
                let mut m = last_expiry.lock().unwrap_or_else(|e| e.into_inner());
                let e = m.entry(rec.kid.clone()).or_insert(rec.expires_at);
                *e = (*e).max(rec.expires_at);
            }
        }
    };
    let counts = |recorded: &mut Recorded, rec: &tally_core::record::IssuanceRecord| {
        if !rec.auth_context.starts_with("external:") {
            *recorded.entry(rec.kid.clone()).or_default() += 1;
        }
    };
    let tampered = |e: &tally_store::LedgerError| match e {
        tally_store::LedgerError::Tampered { .. } => StartError(format!(
            "{e}\nThe ledger no longer matches what tally wrote and signed; refusing to start. \
             Preserve the data directory (or database) as evidence, run `tally ledger verify` \
             for details, and restore the ledger from backup."
        )),
        _ => StartError(format!("cannot open the ledger: {e}")),
    };
    match &config.storage {
        crate::config::Storage::Embedded => {
            let mut recorded = Recorded::new();
            let ledger = Ledger::open(&dir.ledger_path(), signer, progress, &mut |_, rec| {
                counts(&mut recorded, rec);
                learn(rec);
            })
            .map_err(|e| tampered(&e))?;
            Ok((Arc::new(ledger), recorded))
        }
        crate::config::Storage::Postgres { url, schema, node } => {
            use tally_store::fleet::{node::FleetConfig, node::FleetLedger};
            let mac = dir.record_mac();
            // Records this node queued before it (re)started balance its
            // signature account; later ones are counted as they are issued.
            let loading = Arc::new(std::sync::atomic::AtomicBool::new(true));
            let recorded = Arc::new(std::sync::Mutex::new(Recorded::new()));
            let on_record: tally_store::fleet::node::OnRecord = {
                let (loading, recorded, node) = (loading.clone(), recorded.clone(), node.clone());
                Arc::new(move |q: &tally_store::fleet::QueuedRecord| {
                    if loading.load(Ordering::SeqCst) && q.node == node {
                        counts(
                            &mut recorded.lock().unwrap_or_else(|e| e.into_inner()),
                            &q.record,
                        );
                    }
                    learn(&q.record);
                })
            };
            let on_tamper: tally_store::fleet::node::OnTamper =
                Arc::new(|e: &tally_store::fleet::FleetError| {
                    tracing::error!(
                        code = e.code(),
                        finding = %e,
                        "fleet ledger tampered: issuance stopped; preserve the database as evidence"
                    );
                });
            let mut fleet_cfg = FleetConfig::new(url.expose(), schema, node);
            fleet_cfg.witness = Some(dir.path.join(format!("ledger-{schema}.head")));
            let ledger = FleetLedger::open(
                fleet_cfg,
                signer,
                mac,
                progress,
                on_record,
                on_tamper,
            )
            .map_err(|e| match e {
                tally_store::LedgerError::Store(m) => StartError(format!(
                    "cannot open the fleet ledger at {url}: {m}\nCheck that PostgreSQL is reachable \
                     and that this node has the fleet's master key (TALLY_MASTER_KEY)."
                )),
                other => tampered(&other),
            })?;
            loading.store(false, Ordering::SeqCst);
            let recorded = recorded.lock().unwrap_or_else(|e| e.into_inner()).clone();
            tracing::info!(node = %node, schema = %schema, storage = %url, "fleet ledger opened");
            Ok((Arc::new(ledger), recorded))
        }
    }
}

fn keys_dummy_password() -> String {
    crate::keyring::random_hex(16)
}

/// How long a DPoP nonce is current; it is accepted for one more window.
pub(super) const DPOP_NONCE_WINDOW_SECS: i64 = 120;
