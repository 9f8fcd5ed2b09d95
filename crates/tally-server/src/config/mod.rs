//! Configuration: a versioned TOML file, environment variables and flags merged
//! into one validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
mod address;
mod error;
mod limits;
mod passwords;
mod pkcs11;
mod storage;

pub use address::listen_address;
pub use error::ConfigError;
pub use limits::{AccessLogFile, Connections, ConnectionsFile};
pub use passwords::PasswordsFile;

pub use pkcs11::{DEFAULT_PIN_ENV, Pkcs11Config};
pub use storage::{Storage, StorageFile, StorageUrl};
pub use tally_core::endpoint::{jwks_url_allowed, redact_url};
pub use tally_incident::alerts::{SetReceiverConfig, WebhookConfig};

use serde::Deserialize;
use tally_core::target::RequestTarget;

/// The `tally.toml` file. Unknown keys are errors that name the key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// File format version; only `1` exists.
    pub version: Option<u32>,
    /// Listen address, e.g. `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// Data directory.
    pub data: Option<PathBuf>,
    /// The `iss` of issued tokens, and the issuer the gate expects.
    pub issuer: Option<String>,
    /// The `aud` of issued tokens, and the audience the gate expects.
    pub audience: Option<String>,
    /// Access-token lifetime in seconds.
    pub token_ttl_secs: Option<i64>,
    /// Allowed clock skew in seconds for `exp` / `nbf`.
    pub leeway_secs: Option<i64>,
    /// Maximum age of the active signing key before automatic rotation.
    pub key_max_age_secs: Option<i64>,
    /// Lifetime of a refresh token (each use hands out a new one).
    pub refresh_ttl_secs: Option<i64>,
    /// External identity providers whose tokens tally guards too.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Where token-signing keys live: `software` (sealed in state.db) or `pkcs11`.
    pub signer: Option<String>,
    /// The PKCS#11 token, when `signer = "pkcs11"`.
    pub pkcs11: Option<Pkcs11Config>,
    /// The gate as a reverse proxy in front of upstream APIs.
    pub gate: Option<GateConfig>,
    /// Proxies (IP or CIDR) whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Header carrying a device id, for device blocks (default `X-Device-Id`).
    pub device_header: Option<String>,
    /// Days access events are kept (default 180), legal holds permitting.
    pub access_retention_days: Option<i64>,
    /// Unknown tokens (registry misses, each a signature verification) allowed
    /// per client address per second (default 50)...
    pub miss_rate_per_sec: Option<f64>,
    /// ...and at once (default 200).
    pub miss_burst: Option<f64>,
    /// Unknown tokens of requests refused by containment (a blocked
    /// address or device) examined for the record per client address per
    /// second (default 50, as `miss_rate_per_sec`)...
    pub blocked_examine_per_sec: Option<f64>,
    /// ...and at once (default 200).
    pub blocked_examine_burst: Option<f64>,
    /// The same for all blocked clients together, per second (default
    /// 2000)...
    pub blocked_examine_total_per_sec: Option<f64>,
    /// ...and at once (default 2000).
    pub blocked_examine_total_burst: Option<f64>,
    /// Require DPoP server nonces (RFC 9449 section 8/9) in every proof.
    #[serde(default)]
    pub dpop_nonce: bool,
    /// Detection thresholds.
    #[serde(default)]
    pub detector: tally_incident::detect::DetectorConfig,
    /// Automatic containment per rule: `forged_token = ["compromise_key"]`.
    pub actions: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// Reporting regimes: entries override the defaults with the same `id`
    /// (e.g. to enable `sec_8k_105`), new ids are added.
    #[serde(default)]
    pub regimes: Vec<tally_incident::clocks::RegimeOverride>,
    /// Contacts printed in incident reports (`name`, `email`, `phone`, `dpo`, ...).
    #[serde(default)]
    pub contacts: std::collections::BTreeMap<String, String>,
    /// Webhooks that receive signed alerts.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// A receiver of Security Event Tokens (RFC 8417, pushed as in RFC 8935).
    pub set_receiver: Option<SetReceiverConfig>,
    /// Shared storage for a fleet of nodes (`[storage] url = "postgres://…"`).
    pub storage: Option<StorageFile>,
    /// How refusals are written to the access log under a flood.
    pub access_log: Option<AccessLogFile>,
    /// Limits on client connections, for every listener.
    pub connections: Option<ConnectionsFile>,
    /// What a new password must be (`min_length`).
    pub passwords: Option<PasswordsFile>,
}

/// `[gate]`: the reverse proxy.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// The proxy's own listen address.
    pub listen: String,
    /// `enforce` (refused requests never reach an upstream) or `monitor`
    /// (every verdict is decided and recorded, traffic passes).
    #[serde(default)]
    pub mode: Option<GateMode>,
    /// Seconds to wait for an upstream's response head (default 30).
    pub upstream_timeout_secs: Option<u64>,
    /// Routes, matched by longest path prefix.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

impl GateConfig {
    /// The route for a normalised request target: the longest prefix that
    /// covers it segment by segment (routes are kept longest first from the
    /// configuration's load). Only a [`RequestTarget`] can be routed: a raw
    /// path cannot reach this decision.
    pub fn route(&self, target: &RequestTarget) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| target.within(&r.prefix))
    }
}

/// Enforce or only observe.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum GateMode {
    /// Refused requests are answered by the gate.
    #[default]
    Enforce,
    /// Every request passes; verdicts are only recorded.
    Monitor,
}

/// `[[gate.routes]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, starting with `/`.
    pub prefix: String,
    /// Upstream base URL (`http://host:port`); the request path is kept.
    pub upstream: String,
    /// Whether a tallied token is required (default true).
    #[serde(default = "yes")]
    pub require_token: bool,
    /// Data categories this route returns (`name`, `email`, `address`, `orders`, ...).
    #[serde(default)]
    pub data: Vec<String>,
    /// Overrides the gate's mode for this route.
    pub mode: Option<GateMode>,
    /// The audience tokens must carry (`aud`) to use this route; without it,
    /// the server's `audience`.
    pub audience: Option<String>,
}

fn yes() -> bool {
    true
}

/// One `[[issuers]]` entry: an identity provider that registers every token it
/// mints with `POST /v1/issuances` before handing it out.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Short name (used in `auth_context` as `external:<name>` and in logs).
    pub name: String,
    /// The `iss` its tokens carry.
    pub iss: String,
    /// Its public keys, a JWK Set file (reloaded when it changes)...
    pub jwks_file: Option<PathBuf>,
    /// ...or URL (`https://`, or `http://` on a loopback address only),
    /// fetched at start and every `jwks_refresh_secs`.
    pub jwks_url: Option<String>,
    /// How often a `jwks_url` is fetched again (default 300 s).
    pub jwks_refresh_secs: Option<u64>,
    /// Environment variable holding the credential it authenticates with.
    pub credential_env: String,
    /// Optional file of valid subjects, one per line; without it, the
    /// directory is tally's own users.
    pub subjects_file: Option<PathBuf>,
}

/// Validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Data directory.
    pub data: PathBuf,
    /// Token issuer (`iss`): the configured one, else (once the data
    /// directory is opened, see [`crate::keyring::DataDir::issuer`]) the
    /// one fixed at its first run; until then `http://<listen>`.
    pub issuer: String,
    /// Whether `issuer` was configured (`issuer` in the file,
    /// `TALLY_ISSUER`) rather than left to the data directory.
    pub issuer_configured: bool,
    /// Token audience (`aud`).
    pub audience: String,
    /// Access-token lifetime.
    pub token_ttl_secs: i64,
    /// Clock skew allowance.
    pub leeway_secs: i64,
    /// Maximum age of the active signing key (default 30 days).
    pub key_max_age_secs: i64,
    /// Lifetime of a refresh token (default 14 days).
    pub refresh_ttl_secs: i64,
    /// External issuers.
    pub issuers: Vec<IssuerConfig>,
    /// The PKCS#11 token new signing keys are generated in (`signer = "pkcs11"`),
    /// or `None` for software keys sealed under the master key.
    pub pkcs11: Option<Pkcs11Config>,
    /// The reverse proxy, if configured.
    pub gate: Option<GateConfig>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<tally_core::containment::Cidr>,
    /// Header carrying a device id (lower case).
    pub device_header: String,
    /// Days access events are kept, legal holds permitting.
    pub access_retention_days: i64,
    /// Registry misses allowed per client per second.
    pub miss_rate_per_sec: f64,
    /// Registry misses allowed per client at once.
    pub miss_burst: f64,
    /// Unknown tokens of blocked requests examined per client address per
    /// second.
    pub blocked_examine_per_sec: f64,
    /// ...and at once.
    pub blocked_examine_burst: f64,
    /// The same for all blocked clients together.
    pub blocked_examine_total_per_sec: f64,
    /// ...and at once.
    pub blocked_examine_total_burst: f64,
    /// Whether DPoP proofs must carry a server nonce.
    pub dpop_nonce: bool,
    /// Detection thresholds.
    pub detector: tally_incident::detect::DetectorConfig,
    /// Automatic containment per rule.
    pub actions: std::collections::HashMap<
        tally_incident::detect::Rule,
        Vec<tally_incident::detect::Action>,
    >,
    /// Reporting regimes (defaults merged with the file's).
    pub regimes: Vec<tally_incident::clocks::Regime>,
    /// Contacts for reports.
    pub contacts: std::collections::BTreeMap<String, String>,
    /// Webhooks.
    pub webhooks: Vec<WebhookConfig>,
    /// SET receiver.
    pub set_receiver: Option<SetReceiverConfig>,
    /// Where the ledger and shared state live.
    pub storage: Storage,
    /// Redis for fleet-wide distinct counts (`[storage] redis_url`),
    /// parsed and its TLS files read once, at load.
    pub redis: Option<tally_incident::redis::Target>,
    /// How refusals are accounted for in the access log under a flood.
    pub flood: tally_core::flood::FloodPolicy,
    /// Limits on client connections.
    pub connections: Connections,
    /// What a new password must be.
    pub passwords: crate::passwords::Policy,
    /// Every incident is a drill: no reporting regime applies (no legal
    /// clock runs) and incident titles begin with `DRILL:`. Only `tally
    /// serve --dev` sets it; no configuration key or variable can.
    pub drill: bool,
}

/// Values given on the command line or in `TALLY_*` variables (highest priority).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen` / `TALLY_LISTEN`.
    pub listen: Option<String>,
    /// `--data` / `TALLY_DATA`.
    pub data: Option<PathBuf>,
    /// `TALLY_ISSUER`.
    pub issuer: Option<String>,
    /// `TALLY_AUDIENCE`.
    pub audience: Option<String>,
    /// `TALLY_TOKEN_TTL_SECS`.
    pub token_ttl_secs: Option<i64>,
    /// `--storage` / `TALLY_STORAGE_URL`.
    pub storage: Option<String>,
}

impl Config {
    /// Audiences of individual routes, besides the server's own.
    pub fn route_audiences(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .gate
            .iter()
            .flat_map(|g| g.routes.iter())
            .filter_map(|r| r.audience.clone())
            .filter(|a| *a != self.audience)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether tokens may be issued for `audience`: the server's own or a
    /// route's.
    pub fn accepts_audience(&self, audience: &str) -> bool {
        audience == self.audience || self.route_audiences().iter().any(|a| a == audience)
    }

    /// Reads `file` (if any) and applies `over`.
    pub fn load(file: Option<&Path>, over: Overrides) -> Result<Config, ConfigError> {
        match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?;
                Self::from_toml_named(&text, &p.display().to_string(), over)
            }
            None => Self::resolve(FileConfig::default(), over),
        }
    }

    /// Parses configuration `text` (the contents of a `tally.toml`) and
    /// applies `over`. Nothing is read from disk except the TLS files a
    /// `[storage] redis_url` names.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first key that is wrong and why.
    pub fn from_toml(text: &str, over: Overrides) -> Result<Config, ConfigError> {
        Self::from_toml_named(text, "configuration", over)
    }

    fn from_toml_named(text: &str, name: &str, over: Overrides) -> Result<Config, ConfigError> {
        let fc =
            toml::from_str::<FileConfig>(text).map_err(|e| ConfigError(format!("{name}: {e}")))?;
        Self::resolve(fc, over)
    }

    fn resolve(fc: FileConfig, over: Overrides) -> Result<Config, ConfigError> {
        if let Some(v) = fc.version
            && v != 1
        {
            return Err(ConfigError(format!(
                "version = {v} is not supported (this tally reads version 1)"
            )));
        }
        let listen_s = over
            .listen
            .or(fc.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_address(&listen_s).ok_or_else(|| {
            ConfigError(format!(
                "listen = {listen_s:?} is not an address like 127.0.0.1:8080 or localhost:8080"
            ))
        })?;
        let data = over
            .data
            .or(fc.data)
            .unwrap_or_else(|| PathBuf::from("./tally-data"));
        let configured_issuer = over.issuer.or(fc.issuer);
        let issuer_configured = configured_issuer.is_some();
        let issuer = configured_issuer.unwrap_or_else(|| format!("http://{listen}"));
        let audience = over
            .audience
            .or(fc.audience)
            .unwrap_or_else(|| "tally".into());
        let token_ttl_secs = over.token_ttl_secs.or(fc.token_ttl_secs).unwrap_or(900);
        if !(1..=86_400).contains(&token_ttl_secs) {
            return Err(ConfigError(format!(
                "token_ttl_secs = {token_ttl_secs} must be between 1 and 86400"
            )));
        }
        let leeway_secs = fc.leeway_secs.unwrap_or(60);
        if !(0..=600).contains(&leeway_secs) {
            return Err(ConfigError(format!(
                "leeway_secs = {leeway_secs} must be between 0 and 600"
            )));
        }
        let key_max_age_secs = fc.key_max_age_secs.unwrap_or(30 * 86_400);
        if !(1..=366 * 86_400).contains(&key_max_age_secs) {
            return Err(ConfigError(format!(
                "key_max_age_secs = {key_max_age_secs} must be between 1 and 31622400 (366 days)"
            )));
        }
        let refresh_ttl_secs = fc.refresh_ttl_secs.unwrap_or(14 * 86_400);
        if !(60..=366 * 86_400).contains(&refresh_ttl_secs) {
            return Err(ConfigError(format!(
                "refresh_ttl_secs = {refresh_ttl_secs} must be between 60 and 31622400 (366 days)"
            )));
        }
        let pkcs11 = match fc.signer.as_deref().unwrap_or("software") {
            "software" => None,
            "pkcs11" => Some(fc.pkcs11.clone().ok_or_else(|| {
                ConfigError(
                    "signer = \"pkcs11\" needs a [pkcs11] table (module, token_label or slot, pin_env)"
                        .into(),
                )
            })?),
            other => {
                return Err(ConfigError(format!(
                    "signer = {other:?}: use \"software\" or \"pkcs11\""
                )));
            }
        };
        let mut gate = fc.gate.clone();
        if let Some(g) = &mut gate {
            // Longest prefix first: the first route whose prefix matches
            // is the one (`GateConfig::route`).
            g.routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
            if let Some(w) = g.routes.windows(2).find(|w| w[0].prefix == w[1].prefix) {
                return Err(ConfigError(format!(
                    "[[gate.routes]] prefix = {:?} is given twice: one route per prefix",
                    w[0].prefix
                )));
            }
        }
        if let Some(g) = &gate {
            listen_address(&g.listen).ok_or_else(|| {
                ConfigError(format!(
                    "[gate] listen = {:?} is not an address like 127.0.0.1:8443 or localhost:8443",
                    g.listen
                ))
            })?;
            for r in &g.routes {
                if !tally_core::target::is_route_prefix(&r.prefix) {
                    let hint = match RequestTarget::parse(&r.prefix) {
                        Ok(t) if !r.prefix.contains(['?', ';']) => {
                            format!("write it in normal form: {:?}", t.path())
                        }
                        _ => "a path starting with /, without query, path parameters, \\, \
                              encoded / or dot segments"
                            .to_string(),
                    };
                    return Err(ConfigError(format!(
                        "[[gate.routes]] prefix = {:?} is not a normalised path: {hint} \
                         (requests are routed on their normalised path)",
                        r.prefix
                    )));
                }
                let ok = r.upstream.parse::<axum::http::Uri>().ok().is_some_and(|u| {
                    u.scheme_str() == Some("http")
                        && u.authority().is_some()
                        && (u.path() == "/" || u.path().is_empty())
                        && u.query().is_none()
                });
                if !ok {
                    return Err(ConfigError(format!(
                        "[[gate.routes]] upstream = {:?} must be a base URL like http://127.0.0.1:9000",
                        r.upstream
                    )));
                }
            }
        }
        let trusted_proxies = fc
            .trusted_proxies
            .iter()
            .map(|c| {
                tally_core::containment::Cidr::parse(c)
                    .map_err(|e| ConfigError(format!("trusted_proxies: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let device_header = fc
            .device_header
            .clone()
            .unwrap_or_else(|| "x-device-id".into())
            .to_ascii_lowercase();
        if axum::http::HeaderName::from_bytes(device_header.as_bytes()).is_err() {
            return Err(ConfigError(format!(
                "device_header = {device_header:?} is not a header name"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for i in &fc.issuers {
            if i.name.is_empty()
                || !i
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError(format!(
                    "[[issuers]] name = {:?}: use letters, digits, - and _",
                    i.name
                )));
            }
            if !seen.insert(i.name.clone()) || !seen.insert(format!("iss:{}", i.iss)) {
                return Err(ConfigError(format!(
                    "[[issuers]] {:?}: names and iss values must be unique",
                    i.name
                )));
            }
            if i.jwks_file.is_some() == i.jwks_url.is_some() {
                return Err(ConfigError(format!(
                    "[[issuers]] {:?}: give exactly one of jwks_file and jwks_url",
                    i.name
                )));
            }
            if let Some(url) = &i.jwks_url
                && !jwks_url_allowed(url)
            {
                return Err(ConfigError(format!(
                    "[[issuers]] {:?}: jwks_url must be https:// (http:// only on 127.0.0.1, [::1] or localhost)",
                    i.name
                )));
            }
            if i.iss.is_empty() || (issuer_configured && i.iss == issuer) {
                return Err(ConfigError(format!(
                    "[[issuers]] {:?}: iss must be non-empty and differ from tally's own issuer",
                    i.name
                )));
            }
        }
        if issuer.is_empty() || audience.is_empty() {
            return Err(ConfigError("issuer and audience must not be empty".into()));
        }
        let storage_file = fc.storage.clone().unwrap_or_default();
        // Syntax and the TLS files are read now; the host is resolved at
        // each connection.
        let redis = storage_file
            .redis_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(tally_incident::redis::Target::parse)
            .transpose()
            .map_err(|e| ConfigError(format!("[storage] redis_url: {e}")))?;
        let storage = Storage::parse(
            over.storage.or(storage_file.url),
            storage_file.schema,
            storage_file.node,
            listen,
        )?;
        Ok(Config {
            drill: false,
            passwords: passwords::policy(fc.passwords.as_ref()).map_err(ConfigError)?,
            storage,
            redis,
            listen,
            data,
            issuer,
            issuer_configured,
            audience,
            token_ttl_secs,
            leeway_secs,
            key_max_age_secs,
            refresh_ttl_secs,
            issuers: fc.issuers,
            pkcs11,
            gate,
            trusted_proxies,
            device_header,
            miss_rate_per_sec: fc.miss_rate_per_sec.unwrap_or(50.0).max(0.0),
            miss_burst: fc.miss_burst.unwrap_or(200.0).max(1.0),
            blocked_examine_per_sec: fc.blocked_examine_per_sec.unwrap_or(50.0).max(0.0),
            blocked_examine_burst: fc.blocked_examine_burst.unwrap_or(200.0).max(1.0),
            blocked_examine_total_per_sec: fc
                .blocked_examine_total_per_sec
                .unwrap_or(2000.0)
                .max(0.0),
            blocked_examine_total_burst: fc.blocked_examine_total_burst.unwrap_or(2000.0).max(1.0),
            dpop_nonce: fc.dpop_nonce,
            actions: {
                // No automatic action unless configured: each detection lists
                // the containment it suggests, for a responder to take.
                let given = fc.actions.unwrap_or_default();
                let mut out = std::collections::HashMap::new();
                for (rule, acts) in given {
                    let r = tally_incident::detect::Rule::parse(&rule).ok_or_else(|| {
                        ConfigError(format!("[actions] {rule}: no such detection rule"))
                    })?;
                    let mut parsed = Vec::new();
                    for a in acts {
                        parsed.push(tally_incident::detect::Action::parse(&a).ok_or_else(|| {
                            ConfigError(format!(
                                "[actions] {rule}: unknown action {a:?} (block_actor, revoke_subject, compromise_key)"
                            ))
                        })?);
                    }
                    out.insert(r, parsed);
                }
                out
            },
            regimes: tally_incident::clocks::merge_regimes(
                tally_incident::clocks::default_regimes(),
                &fc.regimes,
            )
            .map_err(|e| ConfigError(format!("[[regimes]]: {e}")))?,
            contacts: fc.contacts,
            webhooks: {
                let mut names = std::collections::HashSet::new();
                for w in &fc.webhooks {
                    if !names.insert(w.name.clone()) || w.name.is_empty() {
                        return Err(ConfigError(format!(
                            "[[webhooks]] names must be unique and non-empty ({:?})",
                            w.name
                        )));
                    }
                }
                fc.webhooks
            },
            set_receiver: fc.set_receiver,
            detector: {
                let d = fc.detector;
                if d.mass_access_threshold == 0
                    || d.mass_access_window_secs <= 0
                    || d.replay_window_secs <= 0
                    || d.replay_min_sources < 2
                {
                    return Err(ConfigError(
                        "[detector] thresholds and windows must be positive, replay_min_sources at least 2".into(),
                    ));
                }
                d
            },
            flood: {
                let a = fc.access_log.clone().unwrap_or_default();
                let d = tally_core::flood::FloodPolicy::default();
                let p = tally_core::flood::FloodPolicy {
                    samples_per_key: a.samples_per_actor.unwrap_or(d.samples_per_key),
                    bytes_per_sec: a.refusal_bytes_per_sec.unwrap_or(d.bytes_per_sec),
                    burst_bytes: a.refusal_burst_bytes.unwrap_or(d.burst_bytes),
                    max_keys: a.max_actors_per_sec.unwrap_or(d.max_keys),
                };
                if p.max_keys == 0 || p.bytes_per_sec == 0 || p.burst_bytes < 4096 {
                    return Err(ConfigError(
                        "[access_log] max_actors_per_sec and refusal_bytes_per_sec must be positive, \
                         refusal_burst_bytes at least 4096"
                            .into(),
                    ));
                }
                p
            },
            connections: {
                let c = fc.connections.clone().unwrap_or_default();
                let d = Connections::default();
                let secs = |v: Option<u64>, dflt: std::time::Duration, key: &str| match v {
                    None => Ok(dflt),
                    Some(n) if (1..=3600).contains(&n) => Ok(std::time::Duration::from_secs(n)),
                    Some(n) => Err(ConfigError(format!(
                        "[connections] {key} = {n} must be between 1 and 3600"
                    ))),
                };
                let out = Connections {
                    header_read_timeout: secs(
                        c.header_read_timeout_secs,
                        d.header_read_timeout,
                        "header_read_timeout_secs",
                    )?,
                    idle_timeout: secs(c.idle_timeout_secs, d.idle_timeout, "idle_timeout_secs")?,
                    max_per_address: c.max_per_address.unwrap_or(d.max_per_address),
                    max_total: c.max_total.unwrap_or(d.max_total),
                };
                if out.max_per_address == 0 || out.max_total < out.max_per_address {
                    return Err(ConfigError(
                        "[connections] max_per_address must be positive and at most max_total"
                            .into(),
                    ));
                }
                out
            },
            access_retention_days: {
                let d = fc.access_retention_days.unwrap_or(180);
                if !(1..=3650).contains(&d) {
                    return Err(ConfigError(format!(
                        "access_retention_days = {d} must be between 1 and 3650"
                    )));
                }
                d
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_take_names() {
        assert_eq!(
            listen_address("localhost:9000"),
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            listen_address("[::1]:9000"),
            Some("[::1]:9000".parse().unwrap())
        );
        assert_eq!(listen_address("localhost"), None);
        assert_eq!(listen_address("localhost:http"), None);
        assert_eq!(listen_address(":9000"), None);
        let c = Config::load(
            None,
            Overrides {
                listen: Some("localhost:9000".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
    }

    #[test]
    fn jwks_urls() {
        assert!(jwks_url_allowed("https://idp.example/jwks.json"));
        assert!(jwks_url_allowed("http://127.0.0.1:8081/jwks"));
        assert!(jwks_url_allowed("http://localhost/jwks"));
        assert!(jwks_url_allowed("http://[::1]:9/k"));
        assert!(!jwks_url_allowed("http://idp.example/jwks.json"));
        assert!(!jwks_url_allowed("http://127.0.0.1.evil.example/jwks"));
        assert!(!jwks_url_allowed("http://localhost@evil.example/"));
        assert!(!jwks_url_allowed("ftp://127.0.0.1/jwks"));
    }

    #[test]
    fn defaults() {
        let c = Config::load(None, Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data, PathBuf::from("./tally-data"));
        // Until a data directory fixes it (at its first run).
        assert_eq!(c.issuer, "http://127.0.0.1:8080");
        assert!(!c.issuer_configured);
        assert_eq!(c.token_ttl_secs, 900);
        assert_eq!(c.passwords.min_chars, 12);
    }

    #[test]
    fn password_minimums_below_8_are_refused() {
        let load = |text: &str| Config::from_toml(text, Overrides::default());
        let c = load("[passwords]\nmin_length = 8\n").unwrap();
        assert_eq!(c.passwords.min_chars, 8);
        let c = load("[passwords]\nmin_length = 256\n").unwrap();
        assert_eq!(c.passwords.min_chars, 256);
        assert_eq!(load("[passwords]\n").unwrap().passwords.min_chars, 12);
        for (n, says) in [
            ("7", "is below 8"),
            ("0", "is below 8"),
            ("257", "is above 256"),
        ] {
            let err = load(&format!("[passwords]\nmin_length = {n}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("[passwords] min_length = {n}")) && err.contains(says),
                "{n}: {err}"
            );
        }
        for bad in ["min_length = -1", "min_length = \"12\"", "min_lenght = 12"] {
            let err = load(&format!("[passwords]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("min_len"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = std::env::temp_dir().join(format!("tally-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tally.toml");
        std::fs::write(&p, "version = 1\nlisen = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::load(Some(&p), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        std::fs::write(&p, "listen = \"127.0.0.1:9\"\ntoken_ttl_secs = 60\n").unwrap();
        let c = Config::load(Some(&p), Overrides::default()).unwrap();
        assert_eq!(c.listen.port(), 9);
        assert_eq!(c.token_ttl_secs, 60);
        let c = Config::load(
            Some(&p),
            Overrides {
                listen: Some("127.0.0.1:10".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 10);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn gate_routes_match_by_longest_prefix_and_once() {
        let dir = std::env::temp_dir().join(format!("tally-cfg-routes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tally.toml");
        let route = |prefix: &str, aud: &str| {
            format!(
                "[[gate.routes]]\nprefix = {prefix:?}\nupstream = \"http://127.0.0.1:9\"\naudience = {aud:?}\n"
            )
        };
        let load = |routes: &str| {
            std::fs::write(&p, format!("[gate]\nlisten = \"127.0.0.1:9\"\n\n{routes}")).unwrap();
            Config::load(Some(&p), Overrides::default())
        };
        // Shorter prefix first in the file: the longer one still wins.
        let c = load(&(route("/api/", "a") + &route("/api/orders/", "o"))).unwrap();
        let g = c.gate.as_ref().unwrap();
        let t = |path: &str| RequestTarget::parse(path).unwrap();
        let aud = |path: &str| g.route(&t(path)).and_then(|r| r.audience.clone());
        assert_eq!(aud("/api/orders/7").as_deref(), Some("o"));
        assert_eq!(aud("/api/users").as_deref(), Some("a"));
        assert_eq!(aud("/api/x/../orders/7").as_deref(), Some("o"));
        assert!(g.route(&t("/elsewhere")).is_none());
        assert!(
            g.route(&t("/api")).is_none(),
            "/api/ asks for what is below it"
        );
        for bad in ["/api/../x", "/api//x", "/api/%6f", "api", "/a;b", "/a?b"] {
            let err = load(&route(bad, "x")).unwrap_err().to_string();
            assert!(err.contains("not a normalised path"), "{bad}: {err}");
        }
        let err = load(&(route("/api/", "a") + &route("/api/", "b")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("given twice"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
