//! What the detector's watch needs of the running server: containment
//! taken against the data directory and applied at once, the events key,
//! the count of incidents opened.

use crate::app::App;

impl tally_incident::alerts::EventsKey for App {
    fn events_signer(&self) -> Result<(String, tally_core::jose::SigningKey), String> {
        self.dir.events_signer().map_err(|e| e.to_string())
    }
}

impl tally_incident::watch::Responder for App {
    fn take(
        &self,
        c: &tally_incident::detect::Containment,
        why: &str,
        actor: &str,
        now: i64,
    ) -> Result<String, String> {
        crate::contain::take(&self.dir, c, why, actor, now)
    }

    fn reload(&self) {
        self.reload_blocks();
        let _ = self.apply_revocations();
        self.reload_keys(true);
    }

    fn incident_opened(&self) {
        self.metrics.incident_opened();
    }
}
