//! Key custodians: the people answerable for a key. Custody is ended, never
//! deleted (former custodians stay on record), and every change is a key
//! event.

use super::error::StateError;
use super::keys::{KeyEvent, KeyState, insert_event};
use super::store::{StateStore, count};
use crate::sql::args;

impl StateStore {
    /// Adds `person` as a custodian of `kid`. Returns false if they already are.
    pub fn add_custodian(
        &self,
        kid: &str,
        person: &str,
        event: &KeyEvent,
    ) -> Result<bool, StateError> {
        let (kid, person) = (kid.to_owned(), person.to_owned());
        let event = event.clone();
        self.db.write(move |tx| {
            if tx
                .query_opt("SELECT 1 FROM keys WHERE kid = $1", args![&kid])?
                .is_none()
            {
                return Err(StateError::NoSuchKey);
            }
            let n = tx.execute(
                "INSERT INTO key_custodians (kid, person, added_at) VALUES ($1, $2, $3)
                 ON CONFLICT (kid, person) DO UPDATE SET removed_at = NULL, added_at = excluded.added_at
                 WHERE key_custodians.removed_at IS NOT NULL",
                args![kid, person, event.at],
            )?;
            if n > 0 {
                insert_event(tx, &event)?;
            }
            Ok(n > 0)
        })
    }

    /// Current custodians of `kid`.
    pub fn custodians(&self, kid: &str) -> Result<Vec<String>, StateError> {
        let kid = kid.to_owned();
        self.db.read(move |tx| {
            tx.query(
                "SELECT person FROM key_custodians WHERE kid = $1 AND removed_at IS NULL ORDER BY person",
                args![kid],
            )?
            .iter()
            .map(|r| Ok(r.text(0)?))
            .collect()
        })
    }

    /// Former custodians of `kid` (offboarded from it).
    pub fn former_custodians(&self, kid: &str) -> Result<Vec<String>, StateError> {
        let kid = kid.to_owned();
        self.db.read(move |tx| {
            tx.query(
                "SELECT person FROM key_custodians WHERE kid = $1 AND removed_at IS NOT NULL ORDER BY person",
                args![kid],
            )?
            .iter()
            .map(|r| Ok(r.text(0)?))
            .collect()
        })
    }

    /// Token keys `person` is a current custodian of, with their states.
    pub fn keys_of_custodian(&self, person: &str) -> Result<Vec<(String, KeyState)>, StateError> {
        let person = person.to_owned();
        self.db.read(move |tx| {
            tx.query(
                "SELECT k.kid, k.state FROM key_custodians c JOIN keys k ON k.kid = c.kid
                 WHERE c.person = $1 AND c.removed_at IS NULL ORDER BY k.created_at, k.kid",
                args![person],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.text(0)?,
                    KeyState::parse(&r.text(1)?).unwrap_or(KeyState::Compromised),
                ))
            })
            .collect()
        })
    }

    /// Ends `person`'s custody of every key and records `event`.
    pub fn remove_custodian_everywhere(
        &self,
        person: &str,
        event: &KeyEvent,
    ) -> Result<usize, StateError> {
        let person = person.to_owned();
        let event = event.clone();
        self.db.write(move |tx| {
            let n = tx.execute(
                "UPDATE key_custodians SET removed_at = $2 WHERE person = $1 AND removed_at IS NULL",
                args![person, event.at],
            )?;
            insert_event(tx, &event)?;
            Ok(count(n))
        })
    }
}
