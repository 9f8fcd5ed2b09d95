//! External issuers: identity providers a company already runs, guarded by the
//! same ledger.
//!
//! Each configured issuer registers every token it mints with
//! `POST /v1/issuances` (authenticating with its credential) before handing it
//! out. tally verifies the token against that issuer's JWKS, checks its claims
//! and its subject against the directory, records it in the ledger, and from
//! then on the gate allows it. A token from a configured issuer that was never
//! registered has a valid signature and no record: `not_issued`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use subtle::ConstantTimeEq;
use tally_core::digest::TokenDigest;
use tally_core::jose::KeySet;

use crate::config::IssuerConfig;

/// An external issuer as loaded.
pub struct ExternalIssuer {
    /// Its configuration.
    pub config: IssuerConfig,
    /// Its public keys.
    pub keys: KeySet,
    /// Valid subjects, when a subjects file is configured.
    pub subjects: Option<HashSet<String>>,
    credential: [u8; 32],
    loaded_from: (Option<SystemTime>, Option<SystemTime>),
    fetched_at: std::time::Instant,
}

impl std::fmt::Debug for ExternalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalIssuer")
            .field("name", &self.config.name)
            .field("iss", &self.config.iss)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl ExternalIssuer {
    /// Loads the JWKS, the subjects list and the credential of one issuer.
    pub fn load(config: &IssuerConfig) -> Result<ExternalIssuer, String> {
        let name = &config.name;
        let credential = std::env::var(&config.credential_env).map_err(|_| {
            format!(
                "issuer {name}: environment variable {} (its credential) is not set",
                config.credential_env
            )
        })?;
        if credential.len() < 16 {
            return Err(format!(
                "issuer {name}: the credential in {} must be at least 16 characters",
                config.credential_env
            ));
        }
        let (text, source) = match (&config.jwks_file, &config.jwks_url) {
            (Some(file), _) => (
                std::fs::read_to_string(file).map_err(|e| {
                    format!("issuer {name}: cannot read JWKS {}: {e}", file.display())
                })?,
                file.display().to_string(),
            ),
            (None, Some(url)) => (
                fetch_jwks(url).map_err(|e| format!("issuer {name}: {e}"))?,
                url.clone(),
            ),
            (None, None) => return Err(format!("issuer {name}: no jwks_file or jwks_url")),
        };
        let jwks: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("issuer {name}: the JWKS from {source} is not JSON: {e}"))?;
        let keys = KeySet::from_jwks(&jwks).map_err(|e| {
            format!("issuer {name}: {source} is not a usable JWK Set: {e} (every key needs a kid)")
        })?;
        if keys.is_empty() {
            return Err(format!("issuer {name}: the JWKS holds no key"));
        }
        let subjects = match &config.subjects_file {
            None => None,
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| {
                        format!("issuer {name}: cannot read subjects {}: {e}", p.display())
                    })?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect(),
            ),
        };
        Ok(ExternalIssuer {
            config: config.clone(),
            keys,
            subjects,
            credential: *TokenDigest::of(credential.as_bytes()).as_bytes(),
            loaded_from: files_mtime(config),
            fetched_at: std::time::Instant::now(),
        })
    }

    /// Whether the JWKS or the subjects should be loaded again: a file
    /// changed, or a URL's refresh interval passed.
    fn due(&self) -> bool {
        let url_due = self.config.jwks_url.is_some()
            && self.fetched_at.elapsed().as_secs() >= self.config.jwks_refresh_secs.unwrap_or(300);
        files_mtime(&self.config) != self.loaded_from || url_due
    }
}

fn files_mtime(config: &IssuerConfig) -> (Option<SystemTime>, Option<SystemTime>) {
    (
        config.jwks_file.as_deref().and_then(mtime),
        config.subjects_file.as_deref().and_then(mtime),
    )
}

/// Fetches a JWKS (at most 1 MiB, 10 s, no redirects) over https, or http on
/// loopback, which the configuration already enforced.
fn fetch_jwks(url: &str) -> Result<String, String> {
    // rustls needs a process-wide crypto provider: AWS-LC, like the rest of tally.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .map_err(|e| format!("cannot fetch JWKS {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "JWKS {url} answered HTTP {}",
            resp.status().as_u16()
        ));
    }
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(resp, (1 << 20) + 1), &mut body)
        .map_err(|e| format!("cannot read JWKS {url}: {e}"))?;
    if body.len() > 1 << 20 {
        return Err(format!("JWKS {url} is larger than 1 MiB"));
    }
    String::from_utf8(body).map_err(|_| format!("JWKS {url} is not UTF-8"))
}

/// Every configured external issuer.
#[derive(Default)]
pub struct Externals {
    issuers: RwLock<Vec<Arc<ExternalIssuer>>>,
}

impl Externals {
    /// Loads every issuer; any failure is an error naming the issuer.
    pub fn load(configs: &[IssuerConfig]) -> Result<Externals, String> {
        let issuers = configs
            .iter()
            .map(|c| ExternalIssuer::load(c).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Externals {
            issuers: RwLock::new(issuers),
        })
    }

    /// The loaded issuers.
    pub fn all(&self) -> Vec<Arc<ExternalIssuer>> {
        self.issuers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads issuers whose JWKS or subjects file changed. A file that fails
    /// to load keeps the previous version in force (and is reported).
    /// Returns true when something changed.
    pub fn refresh(&self) -> bool {
        let mut changed = false;
        let mut issuers = self.issuers.write().unwrap_or_else(|e| e.into_inner());
        for slot in issuers.iter_mut() {
            if !slot.due() {
                continue;
            }
            match ExternalIssuer::load(&slot.config) {
                Ok(fresh) => {
                    if fresh.keys != slot.keys || fresh.subjects != slot.subjects {
                        tracing::info!(issuer = %fresh.config.name, keys = fresh.keys.len(), "external issuer reloaded");
                        changed = true;
                    }
                    *slot = Arc::new(fresh);
                }
                Err(e) => {
                    tracing::error!(error = %e, "external issuer reload failed; keeping the previous keys");
                    // Keep what is in force; try again after the interval.
                    *slot = Arc::new(ExternalIssuer {
                        config: slot.config.clone(),
                        keys: slot.keys.clone(),
                        subjects: slot.subjects.clone(),
                        credential: slot.credential,
                        loaded_from: files_mtime(&slot.config),
                        fetched_at: std::time::Instant::now(),
                    });
                }
            }
        }
        changed
    }

    /// The issuer whose credential this is (constant-time comparison of digests).
    pub fn authenticate(&self, credential: &str) -> Option<Arc<ExternalIssuer>> {
        let presented = TokenDigest::of(credential.as_bytes());
        let mut found = None;
        for i in self.all() {
            if bool::from(i.credential.ct_eq(presented.as_bytes())) {
                found = Some(i);
            }
        }
        found
    }

    /// Keys of every issuer merged into `own`, with their issuer bindings. A kid
    /// that collides with one of tally's own keys (or another issuer's) is
    /// left out and reported: it could otherwise vouch for the wrong issuer.
    pub fn merge_into(&self, own: &KeySet) -> (KeySet, HashMap<String, String>) {
        let mut keys = own.clone();
        let mut bound = HashMap::new();
        for i in self.all() {
            for k in &i.keys {
                if keys.get(k.kid()).is_some() {
                    tracing::error!(issuer = %i.config.name, kid = %k.kid(), "external key id collides with a trusted key; ignored");
                    continue;
                }
                bound.insert(k.kid().to_string(), i.config.iss.clone());
                keys.insert(k.clone());
            }
        }
        (keys, bound)
    }
}
