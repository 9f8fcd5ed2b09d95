//! Schemas in PostgreSQL: their names (checked, as they are used unquoted),
//! the advisory lock key each store's writers take in a schema, and the one
//! every store's migrations take there (all derived from the schema's name,
//! distinct per use). Migrations themselves are [`crate::migrate`]'s.

use super::error::SqlError;

/// The advisory lock key (`"tallystt"` as ASCII) mixed by [`write_lock_key`]
/// with the schema name. Distinct from the fleet sequencer's key.
const STATE_LOCK: i64 = 0x7461_6c6c_7973_7474;

/// The advisory lock key (`"tallyinc"` as ASCII) mixed by
/// [`incident_lock_key`] with the schema name.
const INCIDENT_LOCK: i64 = 0x7461_6c6c_7969_6e63;

/// The advisory lock key (`"tallymig"` as ASCII) mixed by
/// [`migrate_lock_key`] with the schema name.
const MIGRATE_LOCK: i64 = 0x7461_6c6c_796d_6967;

/// FNV-1a of a schema name.
pub(crate) fn schema_hash(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The PostgreSQL advisory lock key that serialises writers of the state in
/// `schema` (FNV-1a of the name, xor a constant of this module).
pub fn write_lock_key(schema: &str) -> i64 {
    schema_hash(schema) ^ STATE_LOCK
}

/// The PostgreSQL advisory lock key that serialises writers of the incident
/// store in `schema`: distinct from [`write_lock_key`], so that incident
/// writes and state writes in one schema do not wait for each other.
pub fn incident_lock_key(schema: &str) -> i64 {
    schema_hash(schema) ^ INCIDENT_LOCK
}

/// The PostgreSQL advisory lock key that every store's migrations in
/// `schema` take (inside their own store's lock), so that stores sharing a
/// schema create and update its `schema_migrations` table one at a time.
pub fn migrate_lock_key(schema: &str) -> i64 {
    schema_hash(schema) ^ MIGRATE_LOCK
}

/// Checks a PostgreSQL schema name: 1-48 of `a-z`, `0-9`, `_`, starting
/// with a letter (so it can be used unquoted in statements).
pub fn check_schema(schema: &str) -> Result<(), SqlError> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && schema.starts_with(|c: char| c.is_ascii_lowercase())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SqlError::Config(format!(
            "PostgreSQL schema name {schema:?} is not valid: use 1-48 characters of a-z, 0-9 \
             and _, starting with a letter"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema("tally").is_ok());
        assert!(check_schema("t_state_1").is_ok());
        for bad in ["", "1abc", "Tally", "a-b", "a;drop", &"a".repeat(49)] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
        assert_ne!(write_lock_key("a"), write_lock_key("b"));
        assert_ne!(write_lock_key("tally"), crate::fleet::lock_key("tally"));
        assert_ne!(incident_lock_key("tally"), write_lock_key("tally"));
        assert_ne!(incident_lock_key("tally"), crate::fleet::lock_key("tally"));
        for other in [
            write_lock_key("tally"),
            incident_lock_key("tally"),
            crate::fleet::lock_key("tally"),
            crate::fleet::lock_key("tally") ^ 1,
        ] {
            assert_ne!(migrate_lock_key("tally"), other);
        }
    }
}
