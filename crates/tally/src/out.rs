//! Standard output, for every command: `outln!` and `out!` instead of
//! `println!` and `print!` (which panic when the reader has gone).
//!
//! A reader that goes away early (`tally access tail | head -1`) is not an
//! error: the rest of the output is dropped, the command still finishes its
//! work, and its exit status is its own. Any other write error (a full disk,
//! say) is kept, and [`finish`] reports it once the command is done, so that
//! it ends with a message and a non-zero status.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

/// What has happened to standard output so far.
enum State {
    Open,
    /// The reader went away: further output is dropped.
    Closed,
    /// A write failed otherwise: further output is dropped, the error kept.
    Failed(io::Error),
}

static STATE: Mutex<State> = Mutex::new(State::Open);

/// Writes to standard output (what `out!` and `outln!` expand to).
pub fn write(args: fmt::Arguments<'_>) {
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if !matches!(*state, State::Open) {
        return;
    }
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        *state = settle(e);
    }
}

fn settle(e: io::Error) -> State {
    if e.kind() == io::ErrorKind::BrokenPipe {
        State::Closed
    } else {
        State::Failed(e)
    }
}

/// Whether standard output is still taken (no reader went away, no write
/// failed): a command that follows a log stops when it is not.
pub fn open() -> bool {
    matches!(
        *STATE.lock().unwrap_or_else(|e| e.into_inner()),
        State::Open
    )
}

/// Flushes standard output; the write error to report, if any (a reader
/// that went away is none).
pub fn finish() -> Result<(), io::Error> {
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if matches!(*state, State::Open)
        && let Err(e) = io::stdout().lock().flush()
    {
        *state = settle(e);
    }
    match std::mem::replace(&mut *state, State::Closed) {
        State::Failed(e) => Err(e),
        State::Open | State::Closed => Ok(()),
    }
}

/// `print!` to standard output, quiet when the reader has gone.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}

/// `println!` to standard output, quiet when the reader has gone.
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}
