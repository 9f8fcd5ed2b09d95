//! Operator traps: a careless operator's mistake (a second server on the
//! same directory, a command run in the wrong folder, output piped into
//! `head`, a restart on another port, an address already taken) must give a
//! clear error, never a false forgery alarm with legal clocks running.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use crate::{Attack, Run};

pub const ROWS: &[Attack] = &[
    Attack {
        id: "operator.two-servers-one-directory",
        item: 11,
        what: "a second serve on a served directory stops, naming the first; no false alarm",
        run: Run::Scenario(two_servers_one_directory),
    },
    Attack {
        id: "operator.admin-command-in-wrong-folder",
        item: 12,
        what: "admin commands on a missing data directory fail, naming it, and create nothing",
        run: Run::Scenario(admin_command_in_wrong_folder),
    },
    Attack {
        id: "operator.data-directory-is-a-file",
        item: 12,
        what: "--data naming a file: the error says it is a file, advises no `tally init` on it",
        run: Run::Scenario(data_directory_is_a_file),
    },
    Attack {
        id: "operator.closed-stdout",
        item: 13,
        what: "output read by `head -1`: exit 0, no panic; a full disk is still an error",
        run: Run::Scenario(closed_stdout),
    },
    Attack {
        id: "operator.restart-on-another-port",
        item: 14,
        what: "a server restarted on another port honours the tokens it issued",
        run: Run::Scenario(restart_on_another_port),
    },
    Attack {
        id: "operator.port-in-use",
        item: 14,
        what: "serve on an address in use fails, saying so, and creates no data directory",
        run: Run::Scenario(port_in_use),
    },
];

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// A finished `tally` process.
struct Ran {
    status: ExitStatus,
    stderr: String,
}

/// A `tally ARGS` command with the test's usual environment.
fn tally_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("TALLY_LOG", "warn")
        .env_remove("TALLY_MASTER_KEY")
        .env_remove("TALLY_STORAGE_URL")
        .env_remove("TALLY_DATA")
        .env_remove("TALLY_CONFIG")
        .env_remove("TALLY_LISTEN")
        .env_remove("TALLY_ISSUER");
    cmd
}

/// Runs `cmd` (feeding it `stdin`); a process still running after `limit`
/// is killed, and that is an `Err` (a server that should have refused to
/// start is serving).
fn run_until(mut cmd: Command, stdin: Option<&str>, limit: Duration) -> Result<Ran, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tally: {e}"))?;
    if let Some(input) = stdin {
        // A command that refuses early may exit before reading its input.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    }
    drop(child.stdin.take());
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "still running after {limit:?}; its log:\n{}",
                err.join().unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = out.join();
    Ok(Ran {
        status,
        stderr: err.join().unwrap_or_default(),
    })
}

/// A port nothing listens on (free a moment ago).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Item 11: a second `tally serve` on a data directory a server runs on.
/// It used to start, find the ledger changed under it (`ledger_tampered`),
/// answer the first server's tokens `not_issued` and open a critical
/// `forged_token` incident with legal clocks running.
fn two_servers_one_directory() -> Result<(), String> {
    let tmp = TempDir::new("two-servers");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let first = Server::start(&data, None);
    // Admin commands work while the server runs: they take no lock.
    add_user(d, "alice", "alice-passphrase");
    let token = login(&first, "alice", "alice-passphrase");

    let second = run_until(
        tally_cmd(&["serve", "--data", d, "--listen", "127.0.0.1:0"]),
        None,
        Duration::from_secs(20),
    )
    .map_err(|e| format!("the second server did not refuse to start: {e}"))?;
    ensure(!second.status.success(), || {
        format!("the second server exited with {}", second.status)
    })?;
    let holder = format!("pid {}", first.pid());
    ensure(
        second.stderr.contains("is in use by tally serve")
            && second.stderr.contains(&holder)
            && second
                .stderr
                .contains(&first.base.replace("http://", "listening on ")),
        || {
            format!(
                "the error does not name the server holding the directory ({holder}): {}",
                second.stderr
            )
        },
    )?;

    let c = checked(&first, &token);
    ensure(c == (200, "ok".into()), || {
        format!("the first server answers its own token with {c:?}")
    })?;
    let verify = tally(&["ledger", "verify", "--data", d], None);
    ensure(verify.status.success(), || {
        format!(
            "ledger verify while the server runs: {}",
            String::from_utf8_lossy(&verify.stderr)
        )
    })?;
    let list = tally_ok(&["incident", "list", "--data", d, "--format", "json"], None);
    let incidents: serde_json::Value =
        serde_json::from_str(&list).map_err(|e| format!("incident list: {e}: {list}"))?;
    ensure(incidents.as_array().is_some_and(|a| a.is_empty()), || {
        format!("incidents were opened: {incidents}")
    })?;
    ensure(!first.log_text().contains("ledger_tampered"), || {
        format!("the first server reported tampering:\n{}", first.log_text())
    })?;

    // The lock goes with the process, however it ends: after a crash
    // (SIGKILL) the lock file left behind does not block a restart.
    drop(first);
    let again = Server::start(&data, None);
    let c = checked(&again, &token);
    ensure(c == (200, "ok".into()), || {
        format!("after a restart the token is {c:?}")
    })?;
    again.stop();
    Ok(())
}

/// Item 12: an admin command where there is no data directory used to
/// create one, with a new master key; the running server then refused the
/// user it was meant for, with no hint.
fn admin_command_in_wrong_folder() -> Result<(), String> {
    let tmp = TempDir::new("wrong-folder");
    let missing = tmp.path().join("no-such-data");
    let m = missing.to_str().unwrap();
    let key = tally_core::jose::SigningKey::generate(tally_core::jose::Algorithm::EdDSA).unwrap();
    let pem_path = tmp.path().join("key.pem");
    std::fs::write(&pem_path, pem(&key.to_pkcs8_der().unwrap())).unwrap();
    let p = pem_path.to_str().unwrap();
    let commands: &[(&[&str], Option<&str>)] = &[
        (
            &["users", "add", "bob", "--password-stdin", "--data", m],
            Some("bob-passphrase-123\n"),
        ),
        (
            &["clients", "add", "svc", "--secret-stdin", "--data", m],
            Some("client-secret-123\n"),
        ),
        (&["keys", "import", "--pem", p, "--data", m], None),
        (&["users", "totp", "bob", "--data", m], None),
        (&["users", "list", "--data", m], None),
        (&["keys", "list", "--data", m], None),
        (&["block", "list", "--data", m], None),
        (&["incident", "list", "--data", m], None),
        (&["access", "tail", "--data", m], None),
        (&["ledger", "verify", "--data", m], None),
        (&["state", "seal", "--data", m], None),
    ];
    for (args, stdin) in commands {
        let out = tally(args, *stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        ensure(!out.status.success(), || {
            format!("tally {args:?} succeeded on a missing directory")
        })?;
        ensure(
            err.contains(&format!("no tally data directory at {m}"))
                && err.contains(&format!("tally init --data {m}"))
                && err.contains("TALLY_DATA"),
            || format!("tally {args:?}: the error does not say where and what to do: {err}"),
        )?;
        ensure(!missing.exists(), || format!("tally {args:?} created {m}"))?;
    }

    // No --data at all, in a folder without ./tally-data.
    let cwd = TempDir::new("wrong-folder-cwd");
    let expected = cwd.path().join("tally-data");
    let expected = expected.to_str().unwrap();
    for (args, stdin) in [
        (
            ["users", "add", "bob", "--password-stdin"],
            "bob-passphrase-123\n",
        ),
        (
            ["clients", "add", "svc", "--secret-stdin"],
            "client-secret-123\n",
        ),
    ] {
        let mut cmd = tally_cmd(&args);
        cmd.current_dir(cwd.path());
        let out = run_until(cmd, Some(stdin), Duration::from_secs(60))?;
        ensure(!out.status.success(), || {
            format!("tally {args:?} succeeded in a folder without ./tally-data")
        })?;
        ensure(
            out.stderr
                .contains(&format!("no tally data directory at {expected}"))
                && out.stderr.contains("tally init --data"),
            || {
                format!(
                    "tally {args:?}: the error does not name {expected}: {}",
                    out.stderr
                )
            },
        )?;
        let left: Vec<_> = std::fs::read_dir(cwd.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        ensure(left.is_empty(), || {
            format!("tally {args:?} created {left:?} in the current folder")
        })?;
    }
    Ok(())
}

/// Runs `tally ARGS`, reads one line of its output and closes the pipe (or
/// closes it at once, before anything is written); returns its status and
/// standard error.
fn data_directory_is_a_file() -> Result<(), String> {
    let tmp = TempDir::new("data-is-a-file");
    let file = tmp.path().join("notes.txt");
    std::fs::write(&file, "not a data directory\n").unwrap();
    let f = file.to_str().unwrap();
    for args in [
        &["users", "list", "--data", f][..],
        &["keys", "list", "--data", f][..],
        &["ledger", "verify", "--data", f][..],
        &["--data", f, "keys", "log"][..],
    ] {
        let out = tally(args, None);
        let err = String::from_utf8_lossy(&out.stderr);
        ensure(!out.status.success(), || {
            format!("tally {args:?} succeeded on a file")
        })?;
        ensure(
            err.contains(&format!("{f} is a file, not a data directory"))
                && err.contains("--data DIR")
                && !err.contains("tally init"),
            || format!("tally {args:?}: the error does not say it is a file: {err}"),
        )?;
        ensure(
            std::fs::read_to_string(&file).unwrap() == "not a data directory\n",
            || format!("tally {args:?} changed {f}"),
        )?;
    }
    Ok(())
}

fn read_one_line(args: &[&str], at_once: bool) -> Result<(ExitStatus, String), String> {
    let mut child = tally_cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().unwrap();
    if !at_once {
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.is_empty() {
            return Err(format!("tally {args:?} printed nothing"));
        }
    } else {
        drop(stdout);
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .map_err(|e| e.to_string())?;
    Ok((wait_with_deadline(&mut child, Duration::from_secs(60)), err))
}

/// Item 13: `tally access tail | head -1` and `tally users totp … | head -1`
/// used to panic (exit 101): Rust ignores SIGPIPE, and `println!` panics
/// on the broken pipe.
fn closed_stdout() -> Result<(), String> {
    let tmp = TempDir::new("closed-stdout");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let server = Server::start(&data, None);
    add_user(d, "alice", "alice-passphrase");
    let token = login(&server, "alice", "alice-passphrase");
    // More events than a pipe holds (64 KiB), so that `access tail` is still
    // writing when its reader goes away.
    let http = client();
    let tail = || tally_ok(&["access", "tail", "--limit", "100000", "--data", d], None);
    let mut rounds = 0;
    while tail().len() < 256 * 1024 {
        rounds += 1;
        ensure(rounds <= 20, || "the access log does not grow".into())?;
        for _ in 0..300 {
            http.get(server.url("/v1/check"))
                .bearer_auth(&token)
                .send()
                .map_err(|e| e.to_string())?;
        }
        // The access log is written in batches, within a second.
        std::thread::sleep(Duration::from_millis(1200));
    }
    server.stop();

    for (args, at_once) in [
        (
            &["access", "tail", "--limit", "100000", "--data", d][..],
            false,
        ),
        (&["users", "totp", "alice", "--data", d][..], false),
        (&["users", "totp", "alice", "--data", d][..], true),
        (&["keys", "list", "--data", d][..], true),
    ] {
        let (status, err) = read_one_line(args, at_once)?;
        ensure(status.success() && !err.contains("panicked"), || {
            format!("tally {args:?} | head -1: {status}: {err}")
        })?;
        ensure(err.trim().is_empty(), || {
            format!("tally {args:?} | head -1 complained: {err}")
        })?;
    }

    // Any other failure to write is still an error, said once, not a panic.
    if Path::new("/dev/full").exists() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = tally_cmd(&["users", "list", "--data", d])
            .stdin(Stdio::null())
            .stdout(Stdio::from(full))
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure(
            !out.status.success()
                && out.status.code() != Some(101)
                && err.contains("cannot write to standard output")
                && !err.contains("panicked"),
            || format!("tally users list > /dev/full: {}: {err}", out.status),
        )?;
    }
    Ok(())
}

/// Item 14: the issuer used to be `http://<listen>`, so a restart on
/// another port turned every live token into `wrong_issuer`.
fn restart_on_another_port() -> Result<(), String> {
    let tmp = TempDir::new("restart-port");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let a = free_port();
    let b = loop {
        let b = free_port();
        if b != a {
            break b;
        }
    };
    let first = Server::start_on(&data, None, &[], &format!("127.0.0.1:{a}"));
    add_user(d, "alice", "alice-passphrase");
    let token = login(&first, "alice", "alice-passphrase");
    let iss = payload(&token)["iss"].clone();
    ensure(iss == format!("http://127.0.0.1:{a}"), || {
        format!("the first run's issuer is {iss}")
    })?;
    first.stop();

    let second = Server::start_on(&data, None, &[], &format!("127.0.0.1:{b}"));
    let c = checked(&second, &token);
    ensure(c == (200, "ok".into()), || {
        format!("after a restart on port {b}, the token of port {a} is {c:?}")
    })?;
    let fresh = login(&second, "alice", "alice-passphrase");
    ensure(payload(&fresh)["iss"] == iss, || {
        format!(
            "new tokens name {} instead of {iss}",
            payload(&fresh)["iss"]
        )
    })?;
    second.stop();

    // `tally init --listen` fixes it before any server runs.
    let data2 = tmp.path().join("data2");
    let d2 = data2.to_str().unwrap();
    let init = tally_ok(&["init", "--data", d2, "--listen", "127.0.0.1:9"], None);
    ensure(init.contains("issuer          http://127.0.0.1:9"), || {
        format!("tally init does not show the issuer: {init}")
    })?;
    add_user(d2, "alice", "alice-passphrase");
    let server = Server::start(&data2, None);
    let token = login(&server, "alice", "alice-passphrase");
    ensure(payload(&token)["iss"] == "http://127.0.0.1:9", || {
        format!(
            "a token from {} names {}",
            server.base,
            payload(&token)["iss"]
        )
    })?;
    server.stop();
    Ok(())
}

/// Item 14: `tally serve` on an address in use used to create the data
/// directory (master key, keys, databases) before it found out.
fn port_in_use() -> Result<(), String> {
    let tmp = TempDir::new("port-in-use");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let fresh = tmp.path().join("new-data");
    let f = fresh.to_str().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let out = run_until(
        tally_cmd(&["serve", "--data", f, "--listen", &listen]),
        None,
        Duration::from_secs(20),
    )?;
    ensure(!out.status.success(), || {
        format!("serve on a busy port exited with {}", out.status)
    })?;
    ensure(
        out.stderr.contains(&listen) && out.stderr.contains("already in use"),
        || format!("the error does not say {listen} is in use: {}", out.stderr),
    )?;
    ensure(!fresh.exists(), || format!("{f} was created"))?;

    // The same for the reverse proxy's address.
    let cfg = tmp.path().join("tally.toml");
    std::fs::write(&cfg, format!("[gate]\nlisten = \"{listen}\"\n")).unwrap();
    let out = run_until(
        tally_cmd(&[
            "serve",
            "--data",
            f,
            "--listen",
            "127.0.0.1:0",
            "--config",
            cfg.to_str().unwrap(),
        ]),
        None,
        Duration::from_secs(20),
    )?;
    ensure(
        !out.status.success() && out.stderr.contains("already in use"),
        || {
            format!(
                "serve with its gate on a busy port: {}: {}",
                out.status, out.stderr
            )
        },
    )?;
    ensure(!fresh.exists(), || format!("{f} was created"))?;
    drop(busy);
    Ok(())
}
