//! The PostgreSQL connection threads. The synchronous client must not block
//! an async runtime's worker, so each connection lives on a thread of its
//! own; closures are queued to a free one and the caller waits, within
//! bounds ([`QUEUE_WAIT`], [`REPLY_WAIT`]). A thread connects on demand
//! (failing fast for a moment after a failed attempt), begins the
//! transaction its mode asks for, takes the store's advisory lock for a
//! write, and commits or rolls back by the closure's answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use postgres::{Client, Statement};

use super::error::SqlError;
use super::pg_tx::PgTx;
use super::tx::{Mode, Tx};
use super::value::Value;

/// How long a closure may wait for a free PostgreSQL connection before it
/// fails without running.
const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// How long a caller waits for a PostgreSQL answer at most.
const REPLY_WAIT: Duration = Duration::from_secs(30);
/// Every statement is cancelled by the server after this.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed connection attempt, jobs fail at once for this long
/// instead of each waiting for a connection timeout of its own.
const DOWN_BACKOFF: Duration = Duration::from_secs(1);

type Job = Box<dyn FnOnce(&mut Worker) + Send + 'static>;

/// The connection threads, fed through one channel.
pub(super) struct Pool {
    jobs: mpsc::Sender<Job>,
}

impl Pool {
    /// A pool of `connections` threads (at least one) for `url`, each
    /// working in `schema` with `lock_key` as its writers' lock, named after
    /// `name`. Connections are opened on first use; nothing is contacted here.
    pub(super) fn start(
        url: &str,
        schema: &str,
        connections: usize,
        name: &str,
        lock_key: i64,
    ) -> Result<Pool, SqlError> {
        let tls = crate::pg::parse(url).map_err(SqlError::Config)?;
        let mut config = tls.config.clone();
        crate::pg::harden(&mut config, Some(STATEMENT_TIMEOUT));
        if config.get_application_name().is_none() {
            config.application_name(name);
        }
        let target = describe(&config);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let down = Arc::new(Mutex::new(None));
        for n in 0..connections.max(1) {
            let mut worker = Worker {
                config: config.clone(),
                target: target.clone(),
                schema: schema.to_owned(),
                lock_key,
                tls: tls.clone(),
                client: None,
                statements: HashMap::new(),
                down: down.clone(),
            };
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("{name}-pg-{n}"))
                .spawn(move || worker.serve(&queue))
                .map_err(|e| {
                    SqlError::Unavailable(format!(
                        "cannot start a PostgreSQL connection thread: {e}"
                    ))
                })?;
        }
        Ok(Pool { jobs })
    }

    pub(super) fn run<T, E, F>(&self, mode: Mode, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<SqlError> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel::<Result<T, E>>(1);
        let queued = Instant::now();
        let job: Job = Box::new(move |w: &mut Worker| {
            let out = if queued.elapsed() > QUEUE_WAIT {
                Err(SqlError::Unavailable(format!(
                    "no PostgreSQL connection became free within {} s; the database is slow \
                     or overloaded",
                    QUEUE_WAIT.as_secs()
                ))
                .into())
            } else {
                w.run(mode, f)
            };
            // The caller may have given up; nobody to tell then.
            let _ = reply.send(out);
        });
        self.jobs.send(job).map_err(|_| {
            SqlError::Unavailable("the PostgreSQL connection threads have stopped".into())
        })?;
        match answer.recv_timeout(REPLY_WAIT) {
            Ok(out) => out,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(SqlError::Unavailable(format!(
                "PostgreSQL did not answer within {} s{}",
                REPLY_WAIT.as_secs(),
                if mode == Mode::Write {
                    "; the change may or may not have been applied"
                } else {
                    ""
                }
            ))
            .into()),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(SqlError::Unavailable(
                "a PostgreSQL connection thread failed while running the request".into(),
            )
            .into()),
        }
    }
}

/// One connection thread: its client (opened on demand) and its prepared
/// statements.
struct Worker {
    config: postgres::Config,
    /// `host:port/database`, for messages (never the password).
    target: String,
    schema: String,
    lock_key: i64,
    /// TLS settings from the URL.
    tls: crate::pg::Target,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
    /// When a connection attempt last failed, shared by the pool.
    down: Arc<Mutex<Option<Instant>>>,
}

fn describe(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

impl Worker {
    fn serve(&mut self, queue: &Mutex<mpsc::Receiver<Job>>) {
        loop {
            let job = {
                let queue = queue.lock().unwrap_or_else(|e| e.into_inner());
                queue.recv()
            };
            let Ok(job) = job else {
                // The pool is gone.
                return;
            };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(self)));
            if ran.is_err() {
                // The connection may be mid-transaction: start afresh.
                self.reset();
            }
        }
    }

    fn reset(&mut self) {
        self.client = None;
        self.statements.clear();
    }

    /// An open connection, reconnecting if needed.
    fn connect(&mut self) -> Result<(), SqlError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        self.reset();
        {
            let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            if down.is_some_and(|at| at.elapsed() < DOWN_BACKOFF) {
                return Err(SqlError::Unavailable(format!(
                    "PostgreSQL at {} was unreachable a moment ago; check that it is running",
                    self.target
                )));
            }
        }
        let attempt = crate::pg::connect(&self.config, &self.tls).and_then(|mut c| {
            c.batch_execute(&format!("SET search_path TO {}", self.schema))?;
            Ok(c)
        });
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match attempt {
            Ok(c) => {
                *down = None;
                self.client = Some(c);
                Ok(())
            }
            Err(e) => {
                *down = Some(Instant::now());
                Err(match SqlError::from(e) {
                    SqlError::Unavailable(m) | SqlError::Database(m) => SqlError::Unavailable(
                        format!("cannot connect to PostgreSQL at {}: {m}", self.target),
                    ),
                    other => other,
                })
            }
        }
    }

    /// Opens a transaction; a connection found dead on the way is replaced
    /// once (nothing has been done on it yet, so retrying is safe).
    fn begin(&mut self, mode: Mode) -> Result<(), SqlError> {
        let begin = match mode {
            Mode::Write => "BEGIN",
            Mode::Read => "BEGIN READ ONLY",
            Mode::Snapshot => "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ",
        };
        let mut last = None;
        for _ in 0..2 {
            self.connect()?;
            let Some(client) = self.client.as_mut() else {
                break;
            };
            match client.batch_execute(begin) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => {
                    self.reset();
                    last = Some(SqlError::from(e));
                }
            }
        }
        match last {
            Some(e) => Err(e),
            None if self.client.is_some() => Ok(()),
            None => Err(SqlError::Unavailable("no PostgreSQL connection".into())),
        }
    }

    fn run<T, E: From<SqlError>>(
        &mut self,
        mode: Mode,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        self.begin(mode)?;
        let lock_key = self.lock_key;
        let Worker {
            client: Some(client),
            statements,
            ..
        } = self
        else {
            return Err(SqlError::Unavailable("no PostgreSQL connection".into()).into());
        };
        let mut tx = PgTx {
            client,
            statements,
            failed: false,
        };
        let out = if mode == Mode::Write {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[Value::Int(lock_key)])
                .map_err(E::from)
                .and_then(|_| f(&mut tx))
        } else {
            f(&mut tx)
        };
        let end = match &out {
            Ok(_) => tx.client.batch_execute("COMMIT"),
            Err(_) => tx.client.batch_execute("ROLLBACK"),
        };
        let broken = tx.client.is_closed();
        let failed = end.is_err() || tx.failed;
        if broken {
            self.reset();
        } else if failed {
            // A schema change by another node can invalidate prepared
            // statements: prepare afresh after any database failure.
            self.statements.clear();
        }
        match (out, end) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(SqlError::from(e).into()),
            (Err(e), _) => Err(e),
        }
    }
}
