//! The incident store, opened for one command.

use anyhow::{Context, Result};
use tally_incident::store::IncidentStore;
use tally_server::Config;
use tally_server::keyring::DataDir;

use crate::cmd::{Globals, coded, config, open_data_dir};

/// What every `tally incident` command works on.
pub(super) struct Opened {
    pub(super) c: Config,
    pub(super) dir: DataDir,
    pub(super) store: IncidentStore,
    pub(super) now: i64,
}

impl Opened {
    pub(super) fn open(g: &Globals) -> Result<Opened> {
        let c = config(g, None)?;
        let dir = open_data_dir(&c)?;
        let store = dir
            .incidents()
            .map_err(coded)
            .context("cannot open the incident store")?;
        Ok(Opened {
            c,
            dir,
            store,
            now: tally_store::clock::now_unix(),
        })
    }
}

/// Who performs an action: `--actor`, else $SUDO_USER or $USER.
pub(super) fn who(actor: Option<&str>) -> String {
    tally_server::keyring::lifecycle::actor(actor)
}
