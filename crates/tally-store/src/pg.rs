//! Connecting to PostgreSQL: libpq-style URLs, with TLS through rustls
//! (AWS-LC), so that a fleet's nodes can reach a database on another host
//! without trusting the network in between.
//!
//! The URL takes libpq's names: `sslmode` = `disable` (the default here),
//! `prefer` or `require` (encrypted, the server's certificate not checked, as
//! in libpq), `verify-ca` (its chain must lead to `sslrootcert`) or
//! `verify-full` (and its name must be the host's); `sslrootcert` = a PEM
//! file of trusted CA certificates, needed by the last two. Everything else
//! in the URL is read by `postgres::Config`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use postgres::{Client, NoTls, Socket};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, the certificate not checked.
    Prefer,
    /// TLS, the certificate not checked.
    Require,
    /// TLS, the certificate's chain checked against `sslrootcert`.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

/// A parsed URL: the driver's configuration and the TLS settings.
#[derive(Clone)]
pub struct Target {
    /// Everything but TLS.
    pub config: postgres::Config,
    /// The TLS mode.
    pub tls: TlsMode,
    tls_config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Parses `url`, taking out `sslmode` and `sslrootcert`. Errors say what to
/// fix and never repeat the URL (it may hold a password).
pub fn parse(url: &str) -> Result<Target, String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut mode = None;
    let mut root = None;
    let mut rest = Vec::new();
    for p in query.split('&').filter(|p| !p.is_empty()) {
        match p.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.to_string()),
            Some(("sslrootcert", v)) => root = Some(v.to_string()),
            _ => rest.push(p),
        }
    }
    let plain = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config: postgres::Config = plain.parse().map_err(|e| {
        format!(
            "the PostgreSQL URL is not valid ({e}); expected postgres://user@host:port/database"
        )
    })?;
    let tls = match mode.as_deref().unwrap_or("disable") {
        "disable" => TlsMode::Disable,
        "prefer" | "allow" => TlsMode::Prefer,
        "require" => TlsMode::Require,
        "verify-ca" => TlsMode::VerifyCa,
        "verify-full" => TlsMode::VerifyFull,
        other => {
            return Err(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    config.ssl_mode(match tls {
        TlsMode::Disable => postgres::config::SslMode::Disable,
        TlsMode::Prefer => postgres::config::SslMode::Prefer,
        _ => postgres::config::SslMode::Require,
    });
    let tls_config = match tls {
        TlsMode::Disable => None,
        TlsMode::Prefer | TlsMode::Require => Some(client_config(Arc::new(Lenient::new(None)))?),
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let path = root.ok_or_else(|| {
                "sslmode=verify-ca and verify-full need sslrootcert=<PEM file of trusted CAs>"
                    .to_string()
            })?;
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(&path)
                .map_err(|e| format!("sslrootcert={path}: {e}"))?;
            for c in certs {
                let c = c.map_err(|e| format!("sslrootcert={path}: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("sslrootcert={path}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("sslrootcert={path} holds no certificate"));
            }
            let full = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(provider()),
            )
            .build()
            .map_err(|e| format!("sslrootcert={path}: {e}"))?;
            let verifier: Arc<dyn ServerCertVerifier> = if tls == TlsMode::VerifyCa {
                Arc::new(Lenient::new(Some(full)))
            } else {
                full
            };
            Some(client_config(verifier)?)
        }
    };
    Ok(Target {
        config,
        tls,
        tls_config,
    })
}

fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

fn client_config(verifier: Arc<dyn ServerCertVerifier>) -> Result<Arc<ClientConfig>, String> {
    Ok(Arc::new(
        ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

/// What an operator needs to know of a PostgreSQL error: for a server
/// error its SQLSTATE and primary message (never the DETAIL, which may quote
/// row values); otherwise the driver's words and each cause under them (the
/// driver's own text, such as "error performing TLS handshake", names no
/// reason).
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.code().code(), db.message());
    }
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The settings every tally connection to PostgreSQL runs under, client
/// and server side: a server that vanished (no reset, no answer) is given
/// up within seconds rather than the kernel's minutes; statements run at
/// most `statement_timeout` (`None`: no limit, for whole-ledger
/// verification), lock waits at most 10 s, a transaction left idle ends
/// after 30 s, commits are synchronous. Options the URL already carries
/// are kept.
pub fn harden(config: &mut postgres::Config, statement_timeout: Option<std::time::Duration>) {
    use std::time::Duration;
    config
        .connect_timeout(Duration::from_secs(5))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(5));
    let statement_ms = statement_timeout.map_or(0, |d| d.as_millis());
    let options = format!(
        "{} -c statement_timeout={statement_ms} -c lock_timeout=10000 \
         -c idle_in_transaction_session_timeout=30000 -c synchronous_commit=on \
         -c client_min_messages=warning \
         -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3 \
         -c tcp_user_timeout=5000",
        config.get_options().unwrap_or("")
    );
    config.options(options.trim());
}

/// Whether `e` means the database cannot serve now (so tally fails closed
/// with `unavailable` rather than reporting a bad statement): the
/// connection is gone or never came, or SQLSTATE class 08 (connection
/// exception), 53 (insufficient resources), 57 (operator intervention:
/// shutdown, statement timeout) or 55P03 (lock wait timeout).
pub fn is_unavailable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("53") || c.starts_with("57") || c == "55P03"
        }
    }
}

/// Connects with `config` under the TLS settings of `target`.
pub fn connect(config: &postgres::Config, target: &Target) -> Result<Client, postgres::Error> {
    match &target.tls_config {
        None => config.connect(NoTls),
        Some(c) => config.connect(Rustls(c.clone())),
    }
}

/// The certificate check of `require` (none: libpq's meaning) and of
/// `verify-ca` (the chain must lead to a trusted CA, the name is not
/// checked). The handshake's signatures are verified in both.
#[derive(Debug)]
struct Lenient {
    /// `None`: any certificate (require); else the chain is checked.
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Lenient {
    fn new(chain: Option<Arc<rustls::client::WebPkiServerVerifier>>) -> Lenient {
        Lenient {
            chain,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The driver's TLS hook, over rustls.
#[derive(Clone)]
struct Rustls(Arc<ClientConfig>);

impl MakeTlsConnect<Socket> for Rustls {
    type Stream = Stream;
    type TlsConnect = Connect;
    type Error = rustls::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, rustls::Error> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|_| rustls::Error::General(format!("{domain:?} is not a host name")))?;
        Ok(Connect(self.0.clone(), name))
    }
}

struct Connect(Arc<ClientConfig>, ServerName<'static>);

impl TlsConnect<Socket> for Connect {
    type Stream = Stream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, std::io::Error>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            tokio_rustls::TlsConnector::from(self.0)
                .connect(self.1, socket)
                .await
                .map(|s| Stream(Box::new(s)))
        })
    }
}

/// An encrypted connection.
struct Stream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl TlsStream for Stream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_like_libpq() {
        let t = parse("postgres://u@h:5432/db").unwrap();
        assert_eq!(t.tls, TlsMode::Disable);
        let t = parse("postgres://u@h/db?sslmode=require&application_name=x").unwrap();
        assert_eq!(t.tls, TlsMode::Require);
        assert_eq!(t.config.get_application_name(), Some("x"));
        for bad in [
            "postgres://u@h/db?sslmode=verify-full",
            "postgres://u@h/db?sslmode=sometimes",
            "postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let err = parse("postgres://u:s3cret@h/db?sslmode=bogus").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
