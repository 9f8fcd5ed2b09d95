//! The data directory: its layout, first-run creation, and the master key file.
//!
//! ```text
//! tally-data/
//!   master.key   64 hex chars, mode 0600: seals every private key at rest
//!   state.db     users, sealed signing keys, settings
//!   ledger.db    the issuance ledger and its signed checkpoints
//!   serve.lock   held (flock) by the one `tally serve` running on it
//! ```
//!
//! Only `tally init` and `tally serve` create a data directory
//! ([`DataDir::open_or_init`]); every other command opens an existing one
//! ([`DataDir::open_existing`]) and refuses a missing one, naming it. A
//! server holds an exclusive lock on `serve.lock` ([`DataDirLock`]) for as
//! long as it runs, so a second server on the same directory stops at once,
//! naming the first, instead of writing the same ledger. Admin commands do
//! not take it: they work while the server runs.
//!
//! In a fleet (`[storage] url = "postgres://…"`) the state and the ledger
//! live in PostgreSQL, shared by every node; the directory keeps this node's
//! own files (master key, access log, incidents). Every node needs the same
//! master key: copy `master.key` from the first node, or set
//! `TALLY_MASTER_KEY` everywhere.

use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tally_core::jose::Algorithm;
use tally_core::note::NoteSigner;
use tally_core::seal::MasterKey;
use tally_store::{KeyPurpose, KeyRow, KeyState, MASTER_KEY_FILE, STATE_FILE, StateStore};

use tally_store::clock::now_unix;

/// This node's witness, in its own directory, that it has seen the state
/// store's rows sealed.
pub(super) const ROWS_SEALED_FILE: &str = "rows.sealed";

/// The file a running server holds an exclusive lock on (see [`DataDirLock`]).
pub(super) const LOCK_FILE: &str = "serve.lock";

/// The setting (in the state store) holding the issuer fixed at first run.
pub(super) const ISSUER_SETTING: &str = "issuer";

/// A data-directory problem, phrased so the operator knows what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DataDirError(pub String);

/// An opened data directory.
pub struct DataDir {
    /// Its path.
    pub path: PathBuf,
    /// The master key.
    pub master: MasterKey,
    /// The state database.
    pub state: StateStore,
    /// The PKCS#11 token new signing keys are generated in, if configured.
    pub pkcs11: Option<crate::config::Pkcs11Config>,
    /// Where the ledger and shared state live.
    pub storage: crate::config::Storage,
    hsm: std::sync::Mutex<Option<std::sync::Arc<super::pkcs11::Hsm>>>,
}

impl DataDir {
    /// The incident store: `incidents.db` here, or the fleet's shared one
    /// (this directory then keeps the audit head this node has witnessed).
    pub fn incidents(
        &self,
    ) -> Result<tally_incident::store::IncidentStore, tally_incident::store::IncidentError> {
        use tally_incident::store::IncidentStore;
        match &self.storage {
            crate::config::Storage::Embedded => IncidentStore::open(&self.path),
            crate::config::Storage::Postgres { url, schema, .. } => {
                IncidentStore::connect_postgres(url.expose(), schema, &self.path)
            }
        }
    }

    /// The fleet's record MAC (under a key derived from the master key).
    pub fn record_mac(&self) -> tally_store::fleet::RecordMac {
        tally_store::fleet::RecordMac::new(
            &self.master.derive(tally_store::fleet::RecordMac::PURPOSE),
        )
    }

    /// Whether `subject` is a user of this directory, as an incident report
    /// counts affected customers (a member id that does not exist is
    /// evidence of minting, not an affected customer). When the state store
    /// cannot say, the subject counts as a user: it stays among the affected
    /// rather than be left out.
    pub fn is_member(&self, subject: &str) -> bool {
        self.state.user_role(subject).map_or(true, |r| r.is_some())
    }

    /// Path of the ledger database.
    pub fn ledger_path(&self) -> PathBuf {
        self.path.join(tally_store::LEDGER_FILE)
    }

    /// Opens the data directory of `config`, creating it on first use with a
    /// master key, a token-signing key (EdDSA; inside the PKCS#11 token when
    /// `signer = "pkcs11"`) and a ledger key. `TALLY_MASTER_KEY` (64 hex)
    /// overrides the master key file. Only `tally init`, `tally serve` and the
    /// demo (in directories of its own) call this.
    pub fn open_or_init(config: &crate::config::Config) -> Result<DataDir, DataDirError> {
        DataDir::open_with(config, false, true)
    }

    /// Opens an existing data directory whose state store may still hold
    /// rows from before row seals (`tally state seal`): the row key is
    /// installed, the rows are left for [`DataDir::adopt_unsealed`].
    pub fn open_for_sealing(config: &crate::config::Config) -> Result<DataDir, DataDirError> {
        DataDir::require_existing(config)?;
        DataDir::open_with(config, true, false)
    }

    /// Seals the rows from before row seals, as they stand (the operator has
    /// read [`StateStore::unsealed_rows`]), and keeps this node's witness.
    pub fn adopt_unsealed(&self) -> Result<usize, DataDirError> {
        let n = self
            .state
            .adopt_unsealed(now_unix())
            .map_err(|e| DataDirError(format!("state database: {e}")))?;
        self.witness_rows_sealed()?;
        Ok(n)
    }

    fn witness_rows_sealed(&self) -> Result<(), DataDirError> {
        let witness = self.path.join(ROWS_SEALED_FILE);
        if !witness.exists() {
            fs::write(&witness, "the state store's rows are sealed\n")
                .map_err(|e| DataDirError(format!("cannot write {}: {e}", witness.display())))?;
        }
        Ok(())
    }

    fn open_with(
        config: &crate::config::Config,
        unsealed_rows_allowed: bool,
        create: bool,
    ) -> Result<DataDir, DataDirError> {
        let path = config.data.as_path();
        if create {
            DataDir::create(config)?;
        }
        let (state, fresh) = match &config.storage {
            crate::config::Storage::Embedded => {
                let fresh = !path.join(STATE_FILE).exists();
                let state = StateStore::open(&path.join(STATE_FILE))
                    .map_err(|e| DataDirError(format!("cannot open state database: {e}")))?;
                (state, fresh)
            }
            crate::config::Storage::Postgres { url, schema, .. } => {
                let state = StateStore::connect_postgres(url.expose(), schema).map_err(|e| {
                    DataDirError(format!(
                        "cannot open the shared state at {url} (schema {schema}): {e}\n\
                         Check that PostgreSQL is reachable and the URL is right."
                    ))
                })?;
                // A fleet is new until some node has created its keys.
                let fresh = state
                    .keys(KeyPurpose::Ledger)
                    .map_err(|e| DataDirError(format!("shared state: {e}")))?
                    .is_empty();
                if fresh && !create {
                    return Err(DataDirError(format!(
                        "the shared state at {url} (schema {schema}) holds no keys yet: start the \
                         fleet's first node with `tally serve` (or run `tally init`) first; nothing \
                         was created"
                    )));
                }
                (state, fresh)
            }
        };
        let master = load_or_create_master(path, fresh)?;
        let dir = DataDir {
            path: path.to_path_buf(),
            master,
            state,
            pkcs11: config.pkcs11.clone(),
            storage: config.storage.clone(),
            hsm: std::sync::Mutex::new(None),
        };
        dir.ensure_keys()?;
        // The master key is now known to be the right one: install the row
        // key. This node's own witness that it has seen the store sealed
        // keeps a store made to look unsealed from going unnoticed.
        let seen = path.join(ROWS_SEALED_FILE).exists();
        match dir.state.seal_rows(
            tally_store::RowMac::new(&dir.master.derive(tally_store::RowMac::PURPOSE)),
            now_unix(),
            seen,
        ) {
            Ok(()) => dir.witness_rows_sealed()?,
            Err(tally_store::StateError::Unadopted { .. }) if unsealed_rows_allowed => {}
            Err(e) => return Err(DataDirError(format!("state database: {e}"))),
        }
        Ok(dir)
    }

    /// Opens an existing data directory (admin commands); never creates one.
    pub fn open_existing(config: &crate::config::Config) -> Result<DataDir, DataDirError> {
        DataDir::require_existing(config)?;
        DataDir::open_with(config, false, false)
    }

    /// Creates the data directory of `config` (mode 0700) if it is missing.
    /// Only `tally init` and `tally serve` create one.
    pub fn create(config: &crate::config::Config) -> Result<(), DataDirError> {
        let path = config.data.as_path();
        fs::create_dir_all(path).map_err(|e| {
            DataDirError(format!("cannot create data directory {}: {e}", shown(path)))
        })?;
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
        Ok(())
    }

    /// Refuses a data directory that is missing or is not tally's, saying
    /// where it looked and what to do; checks only, creates nothing.
    pub fn require_existing(config: &crate::config::Config) -> Result<(), DataDirError> {
        let path = config.data.as_path();
        let what_to_do = |p: &str| {
            format!(
                "Create it with `tally init --data {p}`, or name the existing data directory \
                 with --data DIR or TALLY_DATA. Nothing was created."
            )
        };
        let p = shown(path);
        if path.exists() && !path.is_dir() {
            return Err(DataDirError(format!(
                "{p} is a file, not a data directory: name the data directory with --data DIR \
                 or TALLY_DATA. Nothing was changed."
            )));
        }
        if !path.is_dir() {
            let holds = if config.storage.is_shared() {
                " (in a fleet it holds this node's own files: its master key, access log and witnesses)"
            } else {
                ""
            };
            return Err(DataDirError(format!(
                "there is no tally data directory at {p}{holds}. {}",
                what_to_do(&p)
            )));
        }
        if !config.storage.is_shared() && !path.join(STATE_FILE).exists() {
            return Err(DataDirError(format!(
                "{p} is not a tally data directory (it holds no {STATE_FILE}). {}",
                what_to_do(&p)
            )));
        }
        Ok(())
    }

    /// The issuer (`iss`) of this data directory's tokens. It is fixed at
    /// the first run (`tally init` or the first `tally serve`) and stored in
    /// the state store, so that a server restarted on another address keeps
    /// honouring the tokens it issued: the configured issuer when one is
    /// given (`issuer`, `TALLY_ISSUER`), otherwise `default` (`http://` and
    /// the first listen address). A configured issuer always wins; it
    /// replaces the stored one only while it is configured.
    pub fn issuer(&self, configured: Option<&str>, default: &str) -> Result<String, DataDirError> {
        let err = |e: tally_store::StateError| DataDirError(format!("state database: {e}"));
        let first = configured.unwrap_or(default);
        let fixed = self
            .state
            .set_meta_if_absent(ISSUER_SETTING, first)
            .map_err(err)?;
        match configured {
            Some(c) if c != fixed => {
                tracing::warn!(
                    configured = c,
                    fixed = %fixed,
                    "the configured issuer replaces the one this data directory was created with: \
                     tokens issued under the old one are refused as wrong_issuer"
                );
                Ok(c.to_string())
            }
            _ => Ok(fixed),
        }
    }

    /// The PKCS#11 token, opened (and logged in to) on first use.
    pub fn hsm(&self) -> Result<std::sync::Arc<super::pkcs11::Hsm>, DataDirError> {
        let mut slot = self.hsm.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = slot.as_ref() {
            return Ok(h.clone());
        }
        let cfg = self.pkcs11.as_ref().ok_or_else(|| {
            DataDirError(
                "this key lives in a PKCS#11 token, but no signer = \"pkcs11\" is configured"
                    .into(),
            )
        })?;
        let hsm = std::sync::Arc::new(
            super::pkcs11::Hsm::open(cfg)
                .map_err(|e| DataDirError(format!("PKCS#11 token ({}): {e}", e.code())))?,
        );
        *slot = Some(hsm.clone());
        Ok(hsm)
    }

    fn ensure_keys(&self) -> Result<(), DataDirError> {
        let err = |e: tally_store::StateError| DataDirError(format!("state database: {e}"));
        // Before anything is sealed, prove this master key is the one the data
        // directory's keys were sealed under: a wrong TALLY_MASTER_KEY must not
        // seal new keys that the real one cannot open.
        if let Some(row) = self.state.keys(KeyPurpose::Ledger).map_err(err)?.first()
            && self
                .master
                .open(&super::material::seal_context(&row.kid), &row.sealed)
                .is_err()
        {
            return Err(DataDirError(format!(
                "the master key does not open the keys in {} (wrong TALLY_MASTER_KEY, or a master.key \
                 from another data directory?); nothing was changed",
                self.path.display()
            )));
        }
        let token_keys = self.state.keys(KeyPurpose::Token).map_err(err)?;
        if !token_keys.iter().any(|k| k.state == KeyState::Active) {
            let row = super::keys::new_token_key(self, Algorithm::EdDSA, now_unix())
                .map_err(|e| DataDirError(e.to_string()))?;
            self.state
                .insert_active_token_key(&row)
                .map_err(|e| DataDirError(format!("state database: {e}")))?;
        }
        let ledger_keys = self.state.keys(KeyPurpose::Ledger).map_err(err)?;
        if ledger_keys.is_empty() {
            // Nodes of a fleet starting at once agree on one origin (and so
            // on one ledger key: its kid is the origin).
            let origin = self
                .state
                .set_meta_if_absent(
                    "ledger_origin",
                    &format!("tally.local/ledger/{}", super::material::random_hex(8)),
                )
                .map_err(err)?;
            let (signer, seed) = NoteSigner::generate(&origin)
                .map_err(|e| DataDirError(format!("ledger key generation failed: {e}")))?;
            let sealed = self
                .master
                .seal(&super::material::seal_context(&origin), &seed[..])
                .map_err(|e| DataDirError(e.to_string()))?;
            match self.state.insert_key(&KeyRow {
                kid: origin.clone(),
                alg: "note-ed25519".into(),
                purpose: KeyPurpose::Ledger,
                state: KeyState::Active,
                created_at: now_unix(),
                state_changed_at: now_unix(),
                public: signer.verifier_key(),
                sealed,
                source: "generated".into(),
            }) {
                // Another node of the fleet made it first: its key is the one.
                Ok(()) | Err(tally_store::StateError::KeyExists) => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }

    /// The key that signs Security Event Tokens (RFC 8417), created on first
    /// use: an Ed25519 key of its own, sealed like every other, published at
    /// `/.well-known/tally-events-jwks.json` and never in the token JWKS (a
    /// relying party must not accept an access token signed with it).
    pub fn events_signer(&self) -> Result<(String, tally_core::jose::SigningKey), DataDirError> {
        use tally_core::jose::{Algorithm, SigningKey};
        let err = |e: tally_store::StateError| DataDirError(format!("state database: {e}"));
        for attempt in 0..2 {
            let rows = self.state.keys(KeyPurpose::Events).map_err(err)?;
            if let Some(row) = rows.iter().find(|r| r.state == KeyState::Active) {
                let der = self
                    .master
                    .open(&super::material::seal_context(&row.kid), &row.sealed)
                    .map_err(|e| DataDirError(format!("events key: {e}")))?;
                return SigningKey::from_pkcs8_der(&der)
                    .map(|k| (row.kid.clone(), k))
                    .map_err(|e| DataDirError(format!("events key: {e}")));
            }
            if attempt == 1 {
                break;
            }
            let key = SigningKey::generate(Algorithm::EdDSA)
                .map_err(|e| DataDirError(format!("events key generation failed: {e}")))?;
            let kid = format!("events-{}", key.verifying_key().thumbprint());
            let der = key
                .to_pkcs8_der()
                .map_err(|e| DataDirError(format!("events key: {e}")))?;
            let sealed = self
                .master
                .seal(&super::material::seal_context(&kid), &der)
                .map_err(|e| DataDirError(e.to_string()))?;
            // Another process may have created one meanwhile: then it wins.
            let _ = self.state.insert_key(&KeyRow {
                kid: kid.clone(),
                alg: "EdDSA".into(),
                purpose: KeyPurpose::Events,
                state: KeyState::Active,
                created_at: now_unix(),
                state_changed_at: now_unix(),
                public: key.verifying_key().with_kid(kid).to_jwk().to_string(),
                sealed,
                source: "generated".into(),
            });
        }
        Err(DataDirError("no events key could be created".into()))
    }

    /// The ledger's checkpoint signer, unsealed.
    pub fn ledger_signer(&self) -> Result<NoteSigner, DataDirError> {
        let rows = self
            .state
            .keys(KeyPurpose::Ledger)
            .map_err(|e| DataDirError(format!("state database: {e}")))?;
        let row = rows
            .iter()
            .find(|r| r.state == KeyState::Active)
            .ok_or_else(|| DataDirError("no active ledger key in the state database".into()))?;
        let seed = self
            .master
            .open(&super::material::seal_context(&row.kid), &row.sealed)
            .map_err(|e| DataDirError(format!("ledger key: {e}")))?;
        let seed: [u8; 32] = seed[..]
            .try_into()
            .map_err(|_| DataDirError("ledger key: stored seed has the wrong length".into()))?;
        let seed = zeroize::Zeroizing::new(seed);
        NoteSigner::from_seed(&row.kid, &seed).map_err(|e| DataDirError(format!("ledger key: {e}")))
    }
}

/// A path as the operator should read it: absolute (the current directory
/// it was relative to is not always obvious), and resolved as far as it
/// exists (a missing directory is shown under its resolved parent).
pub(super) fn shown(path: &Path) -> String {
    let resolved = fs::canonicalize(path).ok().or_else(|| {
        let name = path.file_name()?;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        fs::canonicalize(parent.unwrap_or(Path::new(".")))
            .ok()
            .map(|p| p.join(name))
    });
    resolved
        .or_else(|| std::path::absolute(path).ok())
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// The exclusive lock a server holds on its data directory for as long as it
/// runs: an advisory `flock` on `serve.lock`, so it is released when the
/// process ends, however it ends (a lock file left behind never blocks a
/// restart). The file names the holder: pid, host, listen address and start
/// time.
#[derive(Debug)]
pub struct DataDirLock {
    file: fs::File,
}

impl DataDirLock {
    /// Takes the lock on the existing directory `dir`, or says which server
    /// holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirError> {
        let path = dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| DataDirError(format!("cannot open {}: {e}", shown(&path))))?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { file }),
            Err(fs::TryLockError::WouldBlock) => Err(DataDirError(format!(
                "the data directory {} is in use by {}; stop it first or use another --data",
                shown(dir),
                holder(&file)
            ))),
            Err(fs::TryLockError::Error(e)) => {
                Err(DataDirError(format!("cannot lock {}: {e}", shown(&path))))
            }
        }
    }

    /// Writes who holds the lock: this process, its host, where it listens
    /// and since when.
    pub fn describe(&self, listen: &str) -> Result<(), DataDirError> {
        let text = format!(
            "pid {}\nhost {}\nlisten {listen}\nsince {}\n",
            std::process::id(),
            host_name(),
            tally_incident::timefmt::rfc3339(now_unix())
        );
        let mut f = &self.file;
        f.set_len(0)
            .and_then(|_| f.rewind())
            .and_then(|_| f.write_all(text.as_bytes()))
            .map_err(|e| DataDirError(format!("cannot write the lock file {LOCK_FILE}: {e}")))
    }
}

/// "tally serve (pid 1234 on host, listening on ADDR, since TIME)", read from
/// a lock file someone else holds (it may take its holder a moment to write).
fn holder(file: &fs::File) -> String {
    let mut fields = std::collections::HashMap::new();
    for attempt in 0..20 {
        let mut text = String::new();
        let mut f = file;
        if f.rewind().is_ok() && f.take(4096).read_to_string(&mut text).is_ok() {
            fields = text
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
        if fields.contains_key("since") || attempt == 19 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let get = |k: &str| fields.get(k).map_or("?", String::as_str);
    match fields.get("pid") {
        Some(pid) => format!(
            "tally serve (pid {pid} on {}, listening on {}, since {})",
            get("host"),
            get("listen"),
            get("since")
        ),
        None => "another tally serve (which one it has not written yet)".into(),
    }
}

/// This machine's name, for the lock file.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "an unnamed host".into())
}

fn load_or_create_master(dir: &Path, fresh: bool) -> Result<MasterKey, DataDirError> {
    if let Ok(hex) = std::env::var("TALLY_MASTER_KEY") {
        return MasterKey::from_hex(&hex)
            .map_err(|e| DataDirError(format!("TALLY_MASTER_KEY: {e}")));
    }
    let path = dir.join(MASTER_KEY_FILE);
    if !path.exists() {
        if !fresh {
            return Err(DataDirError(format!(
                "{} is missing: the keys in this data directory cannot be opened without it \
                 (restore it from backup, or set TALLY_MASTER_KEY)",
                path.display()
            )));
        }
        let key = MasterKey::generate().map_err(|e| DataDirError(e.to_string()))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| DataDirError(format!("cannot create {}: {e}", path.display())))?;
        f.write_all(key.to_hex().as_bytes())
            .and_then(|_| f.write_all(b"\n"))
            .and_then(|_| f.sync_all())
            .map_err(|e| DataDirError(format!("cannot write {}: {e}", path.display())))?;
        return Ok(key);
    }
    let meta = fs::metadata(&path)
        .map_err(|e| DataDirError(format!("cannot read {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DataDirError(format!(
            "{} has mode {mode:o}: other users could read the master key. \
             Fix it with `chmod 600 {}` (and check who may have copied it).",
            path.display(),
            path.display()
        )));
    }
    let text = zeroize::Zeroizing::new(
        fs::read_to_string(&path)
            .map_err(|e| DataDirError(format!("cannot read {}: {e}", path.display())))?,
    );
    MasterKey::from_hex(&text).map_err(|e| DataDirError(format!("{}: {e}", path.display())))
}
