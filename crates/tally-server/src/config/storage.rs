//! `[storage]`: where the ledger and the shared state live, and the
//! PostgreSQL URL that never prints its password.

use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigError;
use tally_core::endpoint::redact_url;

/// `[storage]`: where the ledger and the shared state live.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StorageFile {
    /// `postgres://user@host:5432/db` (fleet) or absent (embedded, under `data`).
    pub url: Option<String>,
    /// Schema holding tally's tables (default `tally`).
    pub schema: Option<String>,
    /// This node's name in the shared ledger (default: host name and port).
    pub node: Option<String>,
    /// `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS
    /// (`?cacert=PATH`, `&cert=PATH&key=PATH`): count distinct subjects per
    /// actor across the fleet (mass access and replay spread over many nodes).
    pub redis_url: Option<String>,
}

/// A PostgreSQL URL; its password never appears in logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct StorageUrl(String);

impl StorageUrl {
    /// The URL itself, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl std::fmt::Debug for StorageUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StorageUrl({self})")
    }
}

/// Where the ledger and shared state live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// SQLite files in the data directory (one node).
    Embedded,
    /// One PostgreSQL database shared by a fleet of nodes.
    Postgres {
        /// Connection URL.
        url: StorageUrl,
        /// Schema holding tally's tables.
        schema: String,
        /// This node's name.
        node: String,
    },
}

impl Storage {
    /// Parses `url` (from `--storage`, `TALLY_STORAGE_URL` or `[storage]`).
    pub fn parse(
        url: Option<String>,
        schema: Option<String>,
        node: Option<String>,
        listen: SocketAddr,
    ) -> Result<Storage, ConfigError> {
        let Some(url) = url.filter(|u| !u.is_empty()) else {
            return Ok(Storage::Embedded);
        };
        if url == "embedded" || url == "sqlite" {
            return Ok(Storage::Embedded);
        }
        let url = StorageUrl(url);
        if !(url.0.starts_with("postgres://") || url.0.starts_with("postgresql://")) {
            return Err(ConfigError(format!(
                "storage url {url} is not postgres://… (leave it unset for embedded storage)"
            )));
        }
        let schema = schema.unwrap_or_else(|| "tally".into());
        tally_store::sql::check_schema(&schema)
            .map_err(|e| ConfigError(format!("[storage] {e}")))?;
        let node = node.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "node".into());
            format!("{host}:{}", listen.port())
        });
        Ok(Storage::Postgres { url, schema, node })
    }

    /// Whether this is a fleet store.
    pub fn is_shared(&self) -> bool {
        matches!(self, Storage::Postgres { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    #[test]
    fn storage_urls_never_print_their_passwords() {
        for (url, shown) in [
            (
                "postgres://tally:s3cret@db:5432/t",
                "postgres://tally:***@db:5432/t",
            ),
            (
                "postgres://tally@db/t?sslmode=require&password=s3cret",
                "postgres://tally@db/t?sslmode=require&password=***",
            ),
            ("postgres://db/t", "postgres://db/t"),
        ] {
            let u = StorageUrl(url.into());
            assert_eq!(u.to_string(), shown);
            assert!(!format!("{u:?}").contains("s3cret"));
        }
        let listen: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let err = Storage::parse(Some("mysql://u:s3cret@h/d".into()), None, None, listen)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(
            Storage::parse(
                Some("postgres://h/d".into()),
                Some("Bad-Name".into()),
                None,
                listen
            )
            .is_err()
        );
    }

    #[test]
    fn redis_urls_are_checked_at_load() {
        let dir = std::env::temp_dir().join(format!("tally-cfg-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tally.toml");
        let load = |redis: &str| {
            std::fs::write(&p, format!("[storage]\nredis_url = {redis:?}\n")).unwrap();
            Config::load(Some(&p), Overrides::default())
        };
        // The host is not resolved at load: a Redis that comes up later is fine.
        let c = load("rediss://tally:s3cret@redis.invalid:6380/1").unwrap();
        assert!(c.redis.is_some());
        for (url, says) in [
            ("redis://tally:s3cret@h", "must look like"),
            (
                "rediss://tally:s3cret@h:6380?cacert=/nonexistent/ca.pem",
                "cacert=",
            ),
            (
                "rediss://tally:s3cret@h:6380?verify=none",
                "unknown parameter",
            ),
            ("tcp://tally:s3cret@h:6379", "must look like"),
        ] {
            let err = load(url).unwrap_err().to_string();
            assert!(
                err.contains("redis_url") && err.contains(says),
                "{url}: {err}"
            );
            assert!(!err.contains("s3cret"), "{err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
