//! Black-box tests of `tally ledger verify|key|checkpoint|prove` and of `tally
//! serve` around the ledger: a real data directory populated by real logins to
//! a real server process, then tampered with at the file level.
//!
//! The tampering is done on the bytes of the SQLite file (this crate has no
//! SQLite binding of its own): the ledger is first copied with `VACUUM INTO`
//! (from a read-only connection, so that everything is in one compact file with
//! no WAL), then one table cell is edited, unlinked or added. A control run
//! checks that the untouched copy verifies, so a failure is the tamper's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tally_core::merkle;
use tally_core::note::{NoteVerifier, SignedCheckpoint};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-passphrase";

// ---------------------------------------------------------------- helpers --

/// A unique directory under the system temp dir (`tempfile`), removed on drop.
struct TempDir(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tally-cli-test-{tag}-"))
            .tempdir()
            .expect("create temp dir");
        TempDir(dir.path().to_path_buf(), dir)
    }

    fn data(&self) -> PathBuf {
        self.0.join("data")
    }
}

/// `tally` with an environment that cannot redirect it elsewhere.
fn tally() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    for var in [
        "TALLY_CONFIG",
        "TALLY_DATA",
        "TALLY_LISTEN",
        "TALLY_ISSUER",
        "TALLY_AUDIENCE",
        "TALLY_TOKEN_TTL_SECS",
        "TALLY_MASTER_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("TALLY_LOG", "warn");
    cmd
}

fn run(args: &[&str], data: &Path) -> Output {
    tally()
        .args(args)
        .arg("--data")
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .expect("run tally")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_ok(args: &[&str], data: &Path) -> String {
    let out = run(args, data);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "tally {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// `tally ledger prove JTI --data DIR` (a base64url jti may start with '-').
fn prove(data: &Path, jti: &str) -> Output {
    tally()
        .args(["ledger", "prove", jti, "--data"])
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .expect("run tally ledger prove")
}

fn prove_ok(data: &Path, jti: &str) -> String {
    let out = prove(data, jti);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "tally ledger prove {jti} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// `tally init` + `tally users add`; returns the ledger key printed by init.
fn init_with_user(data: &Path) -> String {
    let out = run_ok(&["init"], data);
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("ledger key"))
        .expect("init prints the ledger key")
        .trim()
        .to_string();
    let mut child = tally()
        .args(["users", "add", USER, "--password-stdin", "--data"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn users add");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "users add: {:?}", text(&out));
    key
}

/// A running `tally serve` child process.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(data: &Path) -> Server {
        match Server::try_start(data) {
            Ok(s) => s,
            Err((status, log)) => panic!("tally serve did not start ({status:?}):\n{log}"),
        }
    }

    /// Starts the server; on failure, its exit status and stderr.
    fn try_start(data: &Path) -> Result<Server, (Option<ExitStatus>, String)> {
        let mut child = tally()
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tally serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("tally listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => Ok(Server {
                child,
                addr: addr.parse().expect("listen address"),
                stderr,
            }),
            Err(_) => {
                // Exited (pipe closed) or hung: collect what it said.
                let deadline = Instant::now() + Duration::from_secs(10);
                let status = loop {
                    if let Some(s) = child.try_wait().unwrap() {
                        break Some(s);
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                std::thread::sleep(Duration::from_millis(50));
                let log = stderr.lock().unwrap().join("\n");
                Err((status, log))
            }
        }
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (20 s at most) for the process to exit.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "tally serve did not exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) {
        self.sigterm();
        let status = self.wait();
        assert!(status.success(), "serve exit {status}:\n{}", self.log());
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Minimal HTTP/1.1 POST with `Connection: close`; returns (status, body).
fn post_json(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let bad = |what: &str| std::io::Error::other(format!("{what}: {raw:?}"));
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, tail) = rest.split_once("\r\n").ok_or_else(|| bad("chunk"))?;
            let size = usize::from_str_radix(size.trim(), 16).map_err(|_| bad("chunk size"))?;
            if size == 0 {
                break;
            }
            out.push_str(tail.get(..size).ok_or_else(|| bad("chunk body"))?);
            rest = tail.get(size + 2..).ok_or_else(|| bad("chunk end"))?;
        }
        out
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// Logs in; Ok(Some(token)) on 200, Ok(None) on another status.
fn login(addr: SocketAddr) -> std::io::Result<Option<String>> {
    let body = format!(r#"{{"username":"{USER}","password":"{PASSWORD}"}}"#);
    let (status, body) = post_json(addr, "/v1/login", &body)?;
    if status != 200 {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| std::io::Error::other(format!("login body {body:?}: {e}")))?;
    let token = v["access_token"]
        .as_str()
        .ok_or_else(|| std::io::Error::other(format!("no access_token in {body:?}")))?;
    Ok(Some(token.to_string()))
}

/// The `jti` claim of a compact JWT (payload = middle base64url segment).
fn jti(token: &str) -> String {
    let payload = token.split('.').nth(1).expect("JWT has a payload");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload"))
            .expect("JSON claims");
    claims["jti"].as_str().expect("jti claim").to_string()
}

/// init, add a user, serve, log in `n` times, stop. Returns the jtis in order
/// and the ledger key printed by `init`.
fn populated(data: &Path, n: usize) -> (Vec<String>, String) {
    let key = init_with_user(data);
    let server = Server::start(data);
    let mut jtis = Vec::new();
    for _ in 0..n {
        let token = login(server.addr)
            .expect("login request")
            .unwrap_or_else(|| panic!("login refused:\n{}", server.log()));
        jtis.push(jti(&token));
    }
    server.stop();
    (jtis, key)
}

fn ledger_file(data: &Path) -> PathBuf {
    data.join("ledger.db")
}

/// The verify result: (exit code, stdout + stderr).
fn verify(data: &Path) -> (Option<i32>, String) {
    let out = run(&["ledger", "verify"], data);
    let (stdout, stderr) = text(&out);
    (out.status.code(), format!("{stdout}\n{stderr}"))
}

/// The index named on verify's "first bad" line.
fn first_bad_index(output: &str) -> u64 {
    let line = output
        .lines()
        .find(|l| l.starts_with("first bad"))
        .unwrap_or_else(|| panic!("no 'first bad' line in:\n{output}"));
    let (_, n) = line
        .rsplit_once("index ")
        .unwrap_or_else(|| panic!("no 'index K' in {line:?}"));
    n.trim().parse().expect("index number")
}

fn assert_verify_ok(data: &Path, entries: usize) {
    let (code, out) = verify(data);
    assert_eq!(code, Some(0), "verify:\n{out}");
    assert!(out.contains("OK"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("entries"))
        .expect("entries line");
    assert_eq!(line.split_whitespace().last(), Some(&*entries.to_string()));
}

fn assert_verify_tampered_at(data: &Path, index: u64, what: &str) {
    let (code, out) = verify(data);
    assert_eq!(code, Some(1), "{what}: verify:\n{out}");
    assert!(out.contains("TAMPERED"), "{what}: {out}");
    assert!(out.contains(&format!("index {index}")), "{what}: {out}");
    assert_eq!(first_bad_index(&out), index, "{what}: {out}");
}

fn assert_serve_refuses(data: &Path, what: &str) {
    match Server::try_start(data) {
        Ok(mut s) => {
            s.sigterm();
            s.wait();
            panic!("{what}: tally serve started on a tampered ledger");
        }
        Err((status, log)) => {
            let status = status.expect("serve exits");
            assert!(!status.success(), "{what}: {status}");
            assert!(
                log.contains("ledger_tampered") || log.contains("tampered"),
                "{what}: serve output does not mention tampering:\n{log}"
            );
        }
    }
}

// ------------------------------------------------- SQLite file surgery --

/// A compact copy of the ledger (VACUUM INTO from a read-only connection).
struct Snapshot {
    bytes: Vec<u8>,
    root_page: u32,
}

fn snapshot(data: &Path) -> Snapshot {
    let copy = data.join("snapshot.db");
    let _ = std::fs::remove_file(&copy);
    {
        let conn = tally_store::ledger::open_read_only(&ledger_file(data)).expect("open ledger");
        conn.execute_batch(&format!("VACUUM INTO '{}'", copy.display()))
            .expect("vacuum into");
    }
    let root_page = {
        let conn = tally_store::ledger::open_read_only(&copy).expect("open copy");
        conn.query_row(
            "SELECT rootpage FROM sqlite_schema WHERE type = 'table' AND name = 'ledger'",
            [],
            |r| r.get::<usize, u32>(0),
        )
        .expect("ledger root page")
    };
    let bytes = std::fs::read(&copy).unwrap();
    let _ = std::fs::remove_file(&copy);
    Snapshot { bytes, root_page }
}

/// Replaces the ledger file (no process has it open).
fn install(data: &Path, bytes: &[u8]) {
    let file = ledger_file(data);
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = file.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    std::fs::write(&file, bytes).unwrap();
}

fn get_varint(b: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(9) {
        if i == 8 {
            return ((v << 8) | byte as u64, 9);
        }
        v = (v << 7) | (byte & 0x7f) as u64;
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    panic!("truncated varint");
}

fn put_varint(v: u64) -> Vec<u8> {
    assert!(v < 1 << 56);
    let mut out = vec![(v & 0x7f) as u8];
    let mut v = v >> 7;
    while v > 0 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.reverse();
    out
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_be_bytes([b[at], b[at + 1]]) as usize
}

/// One table-leaf cell of the ledger table.
struct Cell {
    page: u32,
    slot: usize,
    rowid: u64,
    payload: std::ops::Range<usize>,
}

impl Snapshot {
    fn page_size(&self) -> usize {
        match u16_at(&self.bytes, 16) {
            1 => 65536,
            n => n,
        }
    }

    fn page_base(&self, page: u32) -> usize {
        (page as usize - 1) * self.page_size()
    }

    fn header(&self, page: u32) -> usize {
        self.page_base(page) + if page == 1 { 100 } else { 0 }
    }

    /// Leaf pages of the ledger table, left to right.
    fn leaves(&self, page: u32, out: &mut Vec<u32>) {
        let h = self.header(page);
        match self.bytes[h] {
            0x0D => out.push(page),
            0x05 => {
                let n = u16_at(&self.bytes, h + 3);
                for i in 0..n {
                    let cell = self.page_base(page) + u16_at(&self.bytes, h + 12 + 2 * i);
                    let child = u32::from_be_bytes(self.bytes[cell..cell + 4].try_into().unwrap());
                    self.leaves(child, out);
                }
                let right = u32::from_be_bytes(self.bytes[h + 8..h + 12].try_into().unwrap());
                self.leaves(right, out);
            }
            t => panic!("page {page}: unexpected b-tree page type {t:#x}"),
        }
    }

    fn cells(&self) -> Vec<Cell> {
        let mut pages = Vec::new();
        self.leaves(self.root_page, &mut pages);
        let max_local = self.page_size() - 35;
        let mut out = Vec::new();
        for page in pages {
            let h = self.header(page);
            let n = u16_at(&self.bytes, h + 3);
            for slot in 0..n {
                let offset = self.page_base(page) + u16_at(&self.bytes, h + 8 + 2 * slot);
                let (len, a) = get_varint(&self.bytes[offset..]);
                let (rowid, b) = get_varint(&self.bytes[offset + a..]);
                assert!((len as usize) <= max_local, "row spills to overflow pages");
                let start = offset + a + b;
                out.push(Cell {
                    page,
                    slot,
                    rowid,
                    payload: start..start + len as usize,
                });
            }
        }
        out
    }

    fn cell(&self, rowid: u64) -> Cell {
        self.cells()
            .into_iter()
            .find(|c| c.rowid == rowid)
            .unwrap_or_else(|| panic!("no ledger row {rowid}"))
    }

    /// Absolute ranges of the columns of a cell's record.
    fn columns(&self, cell: &Cell) -> Vec<std::ops::Range<usize>> {
        let p = &self.bytes[cell.payload.clone()];
        let (header_len, mut at) = get_varint(p);
        let mut body = header_len as usize;
        let mut out = Vec::new();
        while at < header_len as usize {
            let (serial, n) = get_varint(&p[at..]);
            at += n;
            let size = match serial {
                0 | 8 | 9 => 0,
                1..=4 => serial as usize,
                5 => 6,
                6 | 7 => 8,
                s if s >= 12 => ((s - 12) / 2) as usize,
                s => panic!("reserved serial type {s}"),
            };
            let start = cell.payload.start + body;
            out.push(start..start + size);
            body += size;
        }
        assert_eq!(body, p.len(), "record body length");
        out
    }

    /// Changes one byte of the token digest inside row `rowid`'s record
    /// (it still decodes; its leaf hash no longer matches).
    fn edit_record(&mut self, rowid: u64) {
        let cell = self.cell(rowid);
        let record = self.columns(&cell)[2].clone();
        assert_eq!(self.bytes[record.start], 1, "record version byte");
        let id_len = u16_at(&self.bytes, record.start + 1);
        let digest_byte = record.start + 3 + id_len + 5;
        self.bytes[digest_byte] ^= 0x55;
    }

    /// Unlinks row `rowid` from its table page (the cell becomes free space).
    fn delete_row(&mut self, rowid: u64) {
        let cell = self.cell(rowid);
        let h = self.header(cell.page);
        let n = u16_at(&self.bytes, h + 3);
        let slots = h + 8;
        self.bytes.copy_within(
            slots + 2 * (cell.slot + 1)..slots + 2 * n,
            slots + 2 * cell.slot,
        );
        self.bytes[slots + 2 * (n - 1)..slots + 2 * n].fill(0);
        self.bytes[h + 3..h + 5].copy_from_slice(&((n - 1) as u16).to_be_bytes());
        assert!(self.cells().iter().all(|c| c.rowid != rowid));
    }

    /// Adds a row `rowid` after the last one: a copy of the last row with a new
    /// token id, a well-formed record and its correct leaf hash.
    fn insert_row(&mut self, rowid: u64, new_jti: &str) {
        let last = self.cells().into_iter().max_by_key(|c| c.rowid).unwrap();
        assert!(last.rowid < rowid);
        let cols = self.columns(&last);
        let old_jti = self.bytes[cols[1].clone()].to_vec();
        assert_eq!(old_jti.len(), new_jti.len(), "same-length token id");
        let mut payload = self.bytes[last.payload.clone()].to_vec();
        let base = last.payload.start;
        // token_id column, and the token id inside the record.
        let rec = cols[2].start - base..cols[2].end - base;
        let tid = cols[1].start - base..cols[1].end - base;
        payload[tid].copy_from_slice(new_jti.as_bytes());
        let id_in_record = rec.start + 3..rec.start + 3 + old_jti.len();
        assert_eq!(payload[id_in_record.clone()], old_jti[..]);
        payload[id_in_record].copy_from_slice(new_jti.as_bytes());
        let leaf = merkle::leaf_hash(&payload[rec]);
        let lh = cols[3].start - base..cols[3].end - base;
        assert_eq!(lh.len(), 32);
        payload[lh].copy_from_slice(&leaf);
        let mut cell = put_varint(payload.len() as u64);
        cell.extend(put_varint(rowid));
        cell.extend_from_slice(&payload);
        self.place_cell(last.page, cell);
        let placed = self.cells().pop().unwrap();
        assert_eq!(placed.rowid, rowid);
        assert_eq!(self.bytes[placed.payload], payload[..]);
    }

    fn place_cell(&mut self, page: u32, cell: Vec<u8>) {
        let h = self.header(page);
        let base = self.page_base(page);
        let n = u16_at(&self.bytes, h + 3);
        let content = match u16_at(&self.bytes, h + 5) {
            0 => 65536,
            c => c,
        };
        let slots_end = h + 8 + 2 * n - base;
        assert!(
            slots_end + 2 + cell.len() <= content,
            "no room on page {page} for the inserted row"
        );
        let at = content - cell.len();
        self.bytes[base + at..base + content].copy_from_slice(&cell);
        self.bytes[base + slots_end..base + slots_end + 2]
            .copy_from_slice(&(at as u16).to_be_bytes());
        self.bytes[h + 3..h + 5].copy_from_slice(&((n + 1) as u16).to_be_bytes());
        self.bytes[h + 5..h + 7].copy_from_slice(&(at as u16).to_be_bytes());
    }
}

// ------------------------------------------------------------------ tests --

#[test]
fn ledger_commands_on_a_served_ledger() {
    let dir = TempDir::new("cmds");
    let data = dir.data();
    const N: usize = 5;
    let (jtis, init_key) = populated(&data, N);
    assert_verify_ok(&data, N);

    // The verifier key: <name>+<hash>+<base64(0x01 || public key)>.
    let key = run_ok(&["ledger", "key"], &data).trim().to_string();
    assert_eq!(key, init_key, "init and `ledger key` print the same key");
    let mut parts = key.splitn(3, '+');
    let (name, hash, b64) = (
        parts.next().unwrap(),
        parts.next().expect("hash"),
        parts.next().expect("key data"),
    );
    assert!(!name.is_empty());
    assert!(
        hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hash}"
    );
    let raw = STANDARD.decode(b64).expect("base64 key data");
    assert_eq!(raw.len(), 33);
    assert_eq!(raw[0], 1, "Ed25519 algorithm byte");
    let verifier = NoteVerifier::from_verifier_key(&key).expect("verifier key parses");

    // The checkpoint verifies with that key and covers every entry.
    let note = run_ok(&["ledger", "checkpoint"], &data);
    let signed = SignedCheckpoint::verify(&note, &verifier).expect("checkpoint verifies");
    assert_eq!(signed.checkpoint().size, N as u64);
    assert_eq!(signed.checkpoint().origin, name);
    let (_, out) = verify(&data);
    let root_line = out.lines().find(|l| l.starts_with("root")).unwrap();
    assert_eq!(
        root_line.split_whitespace().last().unwrap(),
        STANDARD.encode(signed.checkpoint().root_hash)
    );
    // Not under another key.
    let other = tally_core::note::NoteSigner::from_seed(name, &[3u8; 32]).unwrap();
    assert!(SignedCheckpoint::verify(&note, &other.verifier()).is_err());

    // Every issued token's jti is provable.
    for (i, jti) in jtis.iter().enumerate() {
        let out = prove_ok(&data, jti);
        assert!(out.contains("verified    yes"), "{out}");
        assert!(out.contains(&format!("leaf_index  {i}")), "{out}");
        assert!(out.contains(&format!("tree_size   {N}")), "{out}");
    }
    let out = prove(&data, "no-such-token-id");
    assert!(!out.status.success());
    let (stdout, stderr) = text(&out);
    assert!(!stdout.contains("verified    yes"));
    assert!(stderr.contains("no issuance record"), "{stderr}");

    // The read-only commands, run while the server is serving, do not look
    // like tampering to its writer: it goes on issuing.
    let server = Server::start(&data);
    assert_verify_ok(&data, N);
    prove_ok(&data, &jtis[0]);
    run_ok(&["ledger", "checkpoint"], &data);
    let token = login(server.addr)
        .unwrap()
        .unwrap_or_else(|| panic!("login refused after read-only commands:\n{}", server.log()));
    server.stop();
    let out = prove_ok(&data, &jti(&token));
    assert!(out.contains(&format!("leaf_index  {N}")), "{out}");
    let note = run_ok(&["ledger", "checkpoint"], &data);
    let newer = SignedCheckpoint::verify(&note, &verifier).unwrap();
    assert_eq!(newer.checkpoint().size, N as u64 + 1);
}

#[test]
fn verify_and_serve_detect_edited_deleted_and_inserted_rows() {
    let dir = TempDir::new("tamper");
    let data = dir.data();
    const N: usize = 6;
    let (jtis, _) = populated(&data, N);
    assert_verify_ok(&data, N);

    let clean = snapshot(&data);
    assert_eq!(clean.cells().len(), N);
    // Control: the copy itself verifies (the surgery below is the only change).
    install(&data, &clean.bytes);
    assert_verify_ok(&data, N);

    // Edited record bytes at K.
    let k = 3u64;
    let mut s = snapshot(&data);
    s.edit_record(k);
    install(&data, &s.bytes);
    assert_verify_tampered_at(&data, k, "edited row");
    assert_serve_refuses(&data, "edited row");
    let out = prove(&data, &jtis[k as usize]);
    assert!(!out.status.success(), "prove on a tampered ledger");
    let (stdout, stderr) = text(&out);
    assert!(!stdout.contains("verified    yes"));
    assert!(stderr.contains("tampered"), "{stderr}");

    // Deleted middle row.
    install(&data, &clean.bytes);
    assert_verify_ok(&data, N);
    let k = 2u64;
    let mut s = snapshot(&data);
    s.delete_row(k);
    install(&data, &s.bytes);
    assert_verify_tampered_at(&data, k, "deleted row");
    assert_serve_refuses(&data, "deleted row");

    // Deleted last row.
    install(&data, &clean.bytes);
    let mut s = snapshot(&data);
    s.delete_row(N as u64 - 1);
    install(&data, &s.bytes);
    let (code, out) = verify(&data);
    assert_eq!(code, Some(1), "deleted last row:\n{out}");
    assert!(first_bad_index(&out) < N as u64, "{out}");
    assert_serve_refuses(&data, "deleted last row");

    // Inserted row at idx = size, well formed, with a correct leaf hash.
    install(&data, &clean.bytes);
    let mut s = snapshot(&data);
    let forged_jti = "F".repeat(jtis[0].len());
    s.insert_row(N as u64, &forged_jti);
    install(&data, &s.bytes);
    assert_verify_tampered_at(&data, N as u64, "inserted row");
    assert_serve_refuses(&data, "inserted row");

    // Restored from the clean copy, it serves again, with every record.
    install(&data, &clean.bytes);
    assert_verify_ok(&data, N);
    let server = Server::start(&data);
    let token = login(server.addr).unwrap().expect("login after restore");
    server.stop();
    let out = prove_ok(&data, &jti(&token));
    assert!(out.contains(&format!("leaf_index  {N}")), "{out}");
    assert_verify_ok(&data, N + 1);
}

#[test]
fn sigterm_during_logins_loses_no_acknowledged_record() {
    let dir = TempDir::new("sigterm");
    let data = dir.data();
    init_with_user(&data);
    let mut server = Server::start(&data);
    let addr = server.addr;

    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let after_term = Arc::new(AtomicUsize::new(0));
    let termed = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..3 {
        let acked = acked.clone();
        let termed = termed.clone();
        let after_term = after_term.clone();
        threads.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                match login(addr) {
                    Ok(Some(token)) => {
                        if termed.load(Ordering::SeqCst) {
                            after_term.fetch_add(1, Ordering::SeqCst);
                        }
                        acked.lock().unwrap().push(token);
                    }
                    // Refused (e.g. 503 while shutting down): not acknowledged.
                    Ok(None) => {}
                    // The server is gone: stop.
                    Err(_) if termed.load(Ordering::SeqCst) => break,
                    Err(e) => panic!("login failed before SIGTERM: {e}"),
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 8 {
        assert!(
            Instant::now() < deadline,
            "logins too slow:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    termed.store(true, Ordering::SeqCst);
    server.sigterm();
    for t in threads {
        t.join().expect("login thread");
    }
    let status = server.wait();
    assert!(
        status.success(),
        "serve after SIGTERM: {status}\n{}",
        server.log()
    );
    drop(server);

    let tokens = acked.lock().unwrap().clone();
    eprintln!(
        "{} logins acknowledged, {} of them completed after SIGTERM",
        tokens.len(),
        after_term.load(Ordering::SeqCst)
    );
    assert!(tokens.len() >= 8);

    let (code, out) = verify(&data);
    assert_eq!(code, Some(0), "{out}");
    let conn = tally_store::ledger::open_read_only(&ledger_file(&data)).unwrap();
    let size: i64 = conn
        .query_row("SELECT count(*) FROM ledger", [], |r| {
            r.get::<usize, i64>(0)
        })
        .unwrap();
    assert!(size as usize >= tokens.len());
    let mut seen = std::collections::HashSet::new();
    for token in &tokens {
        let id = jti(token);
        assert!(seen.insert(id.clone()), "jti {id} issued twice");
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM ledger WHERE token_id = ?1",
                [id.as_str()],
                |r| r.get::<usize, i64>(0),
            )
            .unwrap();
        assert_eq!(n, 1, "acknowledged token {id} is not in the ledger");
    }
    drop(conn);
    // And the last one acknowledged is provable against the signed head.
    let last = jti(tokens.last().unwrap());
    let out = prove_ok(&data, &last);
    assert!(out.contains("verified    yes"), "{out}");
}
