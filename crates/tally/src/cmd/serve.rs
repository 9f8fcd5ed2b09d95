//! `tally serve`: the issuer, gate and ledger API on one address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use tally_server::config::Storage;
use tally_server::keyring::{DataDir, DataDirLock};
use tally_server::{App, Config};

use super::{Globals, config, dev};

pub(crate) fn run(g: &Globals, listen: Option<String>, dev: bool) -> Result<ExitCode> {
    let cfg = g.config.as_deref();
    if dev {
        let (c, dir) = dev::dev_config(g, listen)?;
        let code = serve(c, cfg, true);
        // The throwaway directory goes once the server has stopped.
        let path = dir.path().to_path_buf();
        drop(dir);
        if !path.exists() {
            eprintln!("tally dev mode: removed {}", path.display());
        }
        return code;
    }
    serve(config(g, listen)?, cfg, false)
}

/// What to do next, printed at every start: where the dashboard is, how to
/// add a user and make it an admin, where the data directory and the master
/// key are. It never shows a secret.
fn next_steps(config: &Config, addr: SocketAddr, cfg: Option<&Path>) -> String {
    let data = absolute(&config.data);
    let mut args = format!("--data {}", data.display());
    if let Some(c) = cfg {
        args.push_str(&format!(" --config {}", absolute(c).display()));
    } else if config.storage != Storage::Embedded {
        // The storage URL may carry a password: it is never printed.
        args.push_str(" --storage URL");
    }
    let master = if std::env::var_os("TALLY_MASTER_KEY").is_some() {
        "from TALLY_MASTER_KEY (no file)".to_string()
    } else {
        format!(
            "{} (mode 0600; keep it secret, back it up)",
            data.join(tally_store::MASTER_KEY_FILE).display()
        )
    };
    format!(
        "tally next steps:\n\
         \x20 dashboard:        http://{addr}/ui\n\
         \x20 add a user:       tally users add NAME --password-stdin {args}  (the password on standard input)\n\
         \x20 make it an admin: tally users role NAME admin {args}\n\
         \x20 data directory:   {}\n\
         \x20 master key:       {master}",
        data.display()
    )
}

/// `p` as an absolute path (symbolic links resolved when it exists).
fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// Why an address cannot be listened on, and what to do about it.
fn cannot_listen(addr: &str, what: &str, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        anyhow!(
            "cannot listen on {addr}{what}: the address is already in use by another process; \
             stop it or choose another address (--listen, or listen in the configuration)"
        )
    } else {
        anyhow::Error::new(e).context(format!("cannot listen on {addr}{what}"))
    }
}

fn serve(mut config: Config, cfg: Option<&Path>, dev: bool) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    // A data directory another server runs on is refused first, naming it.
    let held = if config.data.is_dir() {
        Some(DataDirLock::acquire(&config.data).context("cannot lock the data directory")?)
    } else {
        None
    };
    // Every address is bound before a data directory is created: one in
    // use fails here and leaves nothing behind.
    let (listener, gate_listener) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| cannot_listen(&config.listen.to_string(), "", e))?;
        let gate_listener = match &config.gate {
            Some(g) => Some(
                tokio::net::TcpListener::bind(&g.listen)
                    .await
                    .map_err(|e| cannot_listen(&g.listen, " (gate)", e))?,
            ),
            None => None,
        };
        Ok::<_, anyhow::Error>((listener, gate_listener))
    })?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("cannot tell the address bound for {}", config.listen))?;
    // The address actually bound (port 0 picks one): the lock file names
    // it, and a new data directory's issuer is fixed from it.
    config.listen = addr;
    let lock = match held {
        Some(l) => l,
        None => {
            DataDir::create(&config).context("cannot create the data directory")?;
            DataDirLock::acquire(&config.data).context("cannot lock the new data directory")?
        }
    };
    lock.describe(&addr.to_string())
        .context("cannot record this server in the data directory's lock file")?;
    let mut bar = crate::progress::Progress::new("verifying ledger");
    let app = App::open_locked(config.clone(), lock, &mut |done, total| {
        bar.update(done, total)
    })
    .context("cannot start the server")?;
    bar.finish();
    // Dev mode's admin, in the data directory the server has just created.
    let dev_password = if dev {
        Some(dev::add_admin(&config)?)
    } else {
        None
    };
    rt.block_on(async move {
        tracing::info!(
            listen = %addr,
            data = %config.data.display(),
            ledger_size = app.ledger.size(),
            live_tokens = app.gate.registry().len(),
            ledger_key = %app.ledger.verifier().verifier_key(),
            "tally serving"
        );
        // The gate's line comes first: tools wait for the "tally listening" line.
        if let (Some(l), Some(g)) = (&gate_listener, &config.gate) {
            let gaddr = l.local_addr().with_context(|| {
                format!("cannot tell the address bound for the gate ({})", g.listen)
            })?;
            eprintln!(
                "tally gate listening on http://{gaddr} ({} route(s), {:?} mode)",
                g.routes.len(),
                g.mode.unwrap_or_default()
            );
        }
        if let Some(p) = &dev_password {
            eprintln!("{}", dev::banner(p.as_str()));
        }
        drop(dev_password);
        eprintln!("{}", next_steps(&config, addr, cfg));
        // Last: tools wait for this line, and everything above is out by then.
        eprintln!(
            "tally listening on http://{addr} (data: {})",
            config.data.display()
        );
        tally_server::serve_with_gate(app, listener, gate_listener, shutdown_signal())
            .await
            .context("server error")?;
        tracing::info!("shut down cleanly; every acknowledged record is durable");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; draining requests");
}
