//! `tally serve --dev`: a server to try tally out with. Its data directory
//! is a temporary one, removed when the server stops; it has an `admin`
//! user whose random password is printed once; every incident it opens is a
//! drill, with no legal clocks. Only the explicit flag turns it on: no
//! configuration key or variable does.

use std::path::Path;

use anyhow::{Context, Result, bail};
use tally_server::Config;
use tally_server::config::Storage;
use tally_server::passwords::Policy;
use tally_store::clock::now_unix;
use zeroize::Zeroizing;

use super::{Globals, config};

/// The user dev mode creates, with the admin role.
pub(crate) const ADMIN: &str = "admin";

/// The throwaway data directory of a dev server: removed when this goes.
pub(crate) struct DevDir {
    tmp: tempfile::TempDir,
}

impl DevDir {
    /// The directory that holds the data directory.
    pub(crate) fn path(&self) -> &Path {
        self.tmp.path()
    }
}

/// The configuration of a dev server: the file's and the flags', with a
/// new temporary data directory, embedded storage and drills only.
pub(crate) fn dev_config(g: &Globals, listen: Option<String>) -> Result<(Config, DevDir)> {
    if g.data.is_some() {
        bail!(
            "--dev uses a throwaway data directory of its own and cannot be combined with \
             --data (or TALLY_DATA): drop --dev to serve the data directory, or drop --data"
        );
    }
    if g.storage.is_some() {
        bail!(
            "--dev keeps its data in a throwaway directory and cannot be combined with \
             --storage (or TALLY_STORAGE_URL)"
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("tally-dev-")
        .tempdir()
        .context("cannot create a temporary directory for dev mode")?;
    let dev = DevDir { tmp };
    // A directory that does not exist yet: serve creates it as on any
    // first start.
    let with_data = Globals {
        data: Some(dev.path().join("data")),
        ..g.clone()
    };
    let mut c = config(&with_data, listen)?;
    if c.storage != Storage::Embedded {
        bail!(
            "--dev keeps its data in a throwaway directory: remove [storage] url from the \
             configuration, or drop --dev"
        );
    }
    c.drill = true;
    c.regimes.clear();
    Ok((c, dev))
}

/// Adds the `admin` user with a new random password to the (new) data
/// directory of `c`, and returns the password.
pub(crate) fn add_admin(c: &Config) -> Result<Zeroizing<String>> {
    let dir = super::open_data_dir(c)?;
    let password = admin_password(&c.passwords);
    // Held to the same policy as every password an operator sets.
    c.passwords
        .check(password.as_str())
        .map_err(super::coded)
        .context("cannot make a password for the dev admin")?;
    let hash = tally_server::passwords::hash_once(password.as_str())
        .context("cannot hash the dev admin's password")?;
    dir.state
        .add_user(ADMIN, &hash, now_unix())
        .context("cannot add the dev admin user")?;
    if !dir
        .state
        .set_role(ADMIN, "admin")
        .context("cannot make the dev user an admin")?
    {
        bail!("the dev admin user was not found after it was added");
    }
    Ok(password)
}

/// A new random password for the dev admin: 32 hex characters (128 bits),
/// or as many as `[passwords] min_length` asks for if that is more.
fn admin_password(policy: &Policy) -> Zeroizing<String> {
    let bytes = policy.min_chars.div_ceil(2).max(16);
    Zeroizing::new(tally_server::keyring::random_hex(bytes))
}

/// The banner of a dev server, with the admin's password: the one place
/// tally prints a password.
pub(crate) fn banner(password: &str) -> String {
    format!(
        "tally DEV MODE: a throwaway server to try tally out, NOT for production\n\
         \x20 nothing is kept: the data directory is deleted when the server stops\n\
         \x20 every incident is a drill: its title begins with \"DRILL:\", and no legal reporting clock runs\n\
         \x20 admin user:     {ADMIN}\n\
         \x20 admin password: {password}\n\
         \x20 (printed once, because this is dev mode; tally serve without --dev never prints a password)"
    )
}

#[cfg(test)]
mod tests {
    use tally_server::passwords::{LEAST_MIN_CHARS, MOST_MIN_CHARS, Policy};

    /// The dev admin's password meets any minimum the configuration allows.
    #[test]
    fn the_admin_password_meets_the_policy() {
        for min_chars in [LEAST_MIN_CHARS, 12, 32, 33, 64, MOST_MIN_CHARS] {
            let policy = Policy { min_chars };
            let password = super::admin_password(&policy);
            assert_eq!(policy.check(&password), Ok(()), "{min_chars}");
            assert!(password.len() >= 32, "{min_chars}");
            assert!(password.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
