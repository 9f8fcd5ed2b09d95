//! Password and client-secret hashing (argon2id) with bounded, reused memory,
//! and the [`Policy`] a new password must meet.
//!
//! Argon2 needs a large working memory (19 MiB with the default parameters).
//! Allocating it for every hash and freeing it afterwards lets the system
//! allocator keep each freed buffer in the arena of whichever thread ran the
//! hash, so a server that checks many passwords grows to hundreds of megabytes
//! that it never gives back. Here every hash runs in a [`Slot`] of a small
//! [`Pool`] (one slot per core): each slot owns one [`Memory`], allocated at its
//! first use and reused by every later hash, and wiped after each. The server
//! therefore holds at most `slots × 19 MiB` for hashing, whatever the number of
//! logins.
//!
//! Hashing (`tally users add|reset`, `tally clients add`, the server's dummy
//! hash) and verification (logins, client authentication) go through the same
//! two functions, [`Memory::hash`] and [`Memory::verify`]. Verification reads a
//! PHC string itself (algorithm, version, parameters, salt, digest), computes
//! with the slot's memory and compares the digests in constant time, so every
//! hash that `argon2::Argon2::hash_password` made still verifies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Hashing failed (no randomness, or parameters argon2 refuses); deliberately
/// without detail.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct HashError;

/// Blocks of the default parameters: what a slot keeps.
const KEPT_BLOCKS: usize = Params::DEFAULT.block_count();

/// Argon2 working memory, reused from hash to hash.
pub struct Memory {
    blocks: Vec<Block>,
}

impl Default for Memory {
    fn default() -> Memory {
        Memory::new()
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl Memory {
    /// Memory not yet allocated (it is at the first hash).
    pub fn new() -> Memory {
        Memory { blocks: Vec::new() }
    }

    /// Runs `argon` over `password` and `salt` into `out`, then wipes what it
    /// used. Parameters up to the defaults use the kept blocks; a stored hash
    /// asking for more memory gets its own for that one computation.
    fn compute(
        &mut self,
        argon: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), HashError> {
        let count = argon.params().block_count();
        if count > KEPT_BLOCKS {
            let mut once = vec![Block::new(); count];
            let r = argon.hash_password_into_with_memory(password, salt, out, &mut once[..]);
            once.fill(Block::new());
            return r.map_err(|_| HashError);
        }
        if self.blocks.len() < KEPT_BLOCKS {
            self.blocks = vec![Block::new(); KEPT_BLOCKS];
        }
        let blocks = &mut self.blocks[..count];
        let r = argon.hash_password_into_with_memory(password, salt, out, &mut *blocks);
        // The blocks hold values derived from the password: never left behind.
        blocks.fill(Block::new());
        r.map_err(|_| HashError)
    }

    /// Hashes `password` with argon2id (default parameters, a random 16-byte
    /// salt) into a PHC string, as `Argon2::default().hash_password` does.
    pub fn hash(&mut self, password: &[u8]) -> Result<String, HashError> {
        let mut salt = [0u8; 16];
        SystemRandom::new().fill(&mut salt).map_err(|_| HashError)?;
        self.hash_with_salt(password, &salt)
    }

    fn hash_with_salt(&mut self, password: &[u8], salt: &[u8]) -> Result<String, HashError> {
        let params = Params::DEFAULT;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut out = Zeroizing::new([0u8; Params::DEFAULT_OUTPUT_LEN]);
        self.compute(&argon, password, salt, &mut out[..])?;
        let salt = SaltString::encode_b64(salt).map_err(|_| HashError)?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|_| HashError)?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out[..]).map_err(|_| HashError)?),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches the PHC string `phc` (any argon2 variant,
    /// version and parameters); the digests are compared in constant time. A
    /// string that does not parse matches nothing.
    pub fn verify(&mut self, phc: &str, password: &[u8]) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
            return false;
        };
        let version = match hash.version.map(Version::try_from) {
            None => Version::default(),
            Some(Ok(v)) => v,
            Some(Err(_)) => return false,
        };
        // The output length is the stored digest's.
        let Ok(params) = Params::try_from(&hash) else {
            return false;
        };
        let mut salt_bytes = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
            return false;
        };
        let argon = Argon2::new(algorithm, version, params);
        let mut out = Zeroizing::new([0u8; 64]);
        let Some(out) = out.get_mut(..expected.len()) else {
            return false;
        };
        if self.compute(&argon, password, salt, out).is_err() {
            return false;
        }
        expected.as_bytes().ct_eq(out).into()
    }
}

/// Hashes `password` with memory of its own, through the same computation as
/// every slot: for the admin commands, which hash once and exit.
pub fn hash_once(password: &str) -> Result<String, HashError> {
    Memory::new().hash(password.as_bytes())
}

/// A few slots for hashing, each with its own kept [`Memory`].
pub struct Pool {
    permits: Arc<tokio::sync::Semaphore>,
    free: Mutex<Vec<Memory>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool of `slots` slots (at least one).
    pub fn new(slots: usize) -> Arc<Pool> {
        let slots = slots.max(1);
        Arc::new(Pool {
            permits: Arc::new(tokio::sync::Semaphore::new(slots)),
            free: Mutex::new((0..slots).map(|_| Memory::new()).collect()),
        })
    }

    /// Waits up to `wait` for a free slot; `None` when none freed up.
    pub async fn slot(self: &Arc<Pool>, wait: Duration) -> Option<Slot> {
        match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Some(self.take(permit)),
            _ => None,
        }
    }

    /// A free slot now, if there is one (outside the async runtime).
    pub fn try_slot(self: &Arc<Pool>) -> Option<Slot> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.take(permit))
    }

    fn take(self: &Arc<Pool>, permit: tokio::sync::OwnedSemaphorePermit) -> Slot {
        // One memory per permit: the list is never empty while a permit is free.
        let memory = self.lock().pop().unwrap_or_default();
        Slot {
            memory: Some(memory),
            pool: self.clone(),
            _permit: permit,
        }
    }

    // The list only holds memories: still usable after a panic elsewhere.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Memory>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One slot of the [`Pool`]: its memory, given back when the slot is dropped
/// (before the slot's permit, so the next holder finds it).
pub struct Slot {
    memory: Option<Memory>,
    pool: Arc<Pool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

impl Slot {
    fn memory(&mut self) -> &mut Memory {
        self.memory.get_or_insert_with(Memory::new)
    }

    /// [`Memory::hash`] with this slot's memory.
    pub fn hash(&mut self, password: &str) -> Result<String, HashError> {
        self.memory().hash(password.as_bytes())
    }

    /// [`Memory::verify`] with this slot's memory.
    pub fn verify(&mut self, phc: &str, password: &str) -> bool {
        self.memory().verify(phc, password.as_bytes())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(m) = self.memory.take() {
            self.pool.lock().push(m);
        }
    }
}

/// Longest password accepted anywhere, in bytes: when one is set and at
/// login (a longer one is refused before any hashing, so nobody can make
/// argon2 hash megabytes). 1024 bytes hold 256 characters of any script,
/// well beyond the 64 that NIST SP 800-63B asks verifiers to accept.
pub const MAX_BYTES: usize = 1024;

/// The shortest password that may be set unless `[passwords] min_length`
/// says otherwise, in characters.
pub const DEFAULT_MIN_CHARS: usize = 12;

/// The least `[passwords] min_length` may be: NIST SP 800-63B requires
/// memorized secrets of at least 8 characters.
pub const LEAST_MIN_CHARS: usize = 8;

/// The most `[passwords] min_length` may be: every password of this many
/// characters fits in [`MAX_BYTES`] (a character is at most 4 bytes).
pub const MOST_MIN_CHARS: usize = MAX_BYTES / 4;

/// What a new password must be (NIST SP 800-63B, 5.1.1.2): at least
/// `min_chars` characters (Unicode scalar values, not bytes) and at most
/// [`MAX_BYTES`] bytes. Nothing else: no rules on which kinds of character
/// it holds, as NIST advises. Checked wherever a password is set (`tally
/// users add|reset`, the dev server's admin), never at login: a password set
/// under an older, shorter minimum still logs in, and a login attempt is
/// refused the same way whatever its length, so the answer says nothing
/// about the policy or the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The fewest characters a new password may have.
    pub min_chars: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            min_chars: DEFAULT_MIN_CHARS,
        }
    }
}

/// Why a new password was refused. The message never quotes the password
/// nor says how long it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Fewer characters than the minimum.
    #[error(
        "the password is too short: it must have at least {min} characters \
         ([passwords] min_length); choose a longer one, such as a few unrelated words"
    )]
    TooShort {
        /// The minimum in force.
        min: usize,
    },
    /// More bytes than [`MAX_BYTES`].
    #[error("the password is too long: it must be at most {max} bytes; choose a shorter one")]
    TooLong {
        /// [`MAX_BYTES`].
        max: usize,
    },
}

impl PolicyError {
    /// The stable code: `password_too_short` or `password_too_long`.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::TooShort { .. } => "password_too_short",
            PolicyError::TooLong { .. } => "password_too_long",
        }
    }
}

impl Policy {
    /// Whether `password` may be set as a new password.
    pub fn check(&self, password: &str) -> Result<(), PolicyError> {
        if password.len() > MAX_BYTES {
            return Err(PolicyError::TooLong { max: MAX_BYTES });
        }
        if password.chars().count() < self.min_chars {
            return Err(PolicyError::TooShort {
                min: self.min_chars,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[test]
    fn hashes_made_by_the_crate_still_verify() {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let old = Argon2::default()
            .hash_password(b"s3cret-pass", &salt)
            .unwrap()
            .to_string();
        let mut m = Memory::new();
        assert!(m.verify(&old, b"s3cret-pass"));
        assert!(!m.verify(&old, b"s3cret-pasS"));
        assert!(!m.verify(&old, b""));
        // The same salt gives the same PHC string, byte for byte.
        assert_eq!(
            m.hash_with_salt(b"s3cret-pass", b"0123456789abcdef")
                .unwrap(),
            old
        );
    }

    #[test]
    fn new_hashes_verify_with_the_crate() {
        let mut m = Memory::new();
        let phc = m.hash(b"pw-alice").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"pw-alice", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"pw-bob", &parsed)
                .is_err()
        );
        // Two hashes of one password differ (random salts); both verify.
        let again = m.hash(b"pw-alice").unwrap();
        assert_ne!(phc, again);
        assert!(m.verify(&again, b"pw-alice") && m.verify(&phc, b"pw-alice"));
        // The memory is kept, and wiped.
        assert_eq!(m.blocks.len(), KEPT_BLOCKS);
        assert!(m.blocks.iter().all(|b| b.as_ref().iter().all(|w| *w == 0)));
    }

    #[test]
    fn other_variants_and_parameters_verify() {
        let salt = SaltString::encode_b64(b"another salt 123").unwrap();
        let mut m = Memory::new();
        for (alg, version, params) in [
            (
                Algorithm::Argon2i,
                Version::V0x13,
                Params::new(1024, 3, 1, Some(24)).unwrap(),
            ),
            (
                Algorithm::Argon2d,
                Version::V0x10,
                Params::new(4096, 1, 2, None).unwrap(),
            ),
            // More memory than a slot keeps: computed with memory of its own.
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(24 * 1024, 1, 1, None).unwrap(),
            ),
        ] {
            let phc = Argon2::new(alg, version, params)
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string();
            assert!(m.verify(&phc, b"pw"), "{phc}");
            assert!(!m.verify(&phc, b"px"), "{phc}");
        }
        assert_eq!(m.blocks.len(), KEPT_BLOCKS);
    }

    #[test]
    fn what_is_not_a_usable_hash_matches_nothing() {
        let mut m = Memory::new();
        let good = m.hash(b"pw").unwrap();
        let (head, digest) = good.rsplit_once('$').unwrap();
        for bad in [
            String::new(),
            "$argon2id$".into(),
            "$bcrypt$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
            format!("{head}$"),
            head.to_string(),
            good.replace("v=19", "v=18"),
            good.replace("m=19456", "m=1"),
            good.replace("m=19456", "x=19456"),
            format!("{head}${}", &digest[..digest.len() - 4]),
        ] {
            assert!(!m.verify(&bad, b"pw"), "{bad:?}");
        }
        assert!(m.verify(&good, b"pw"));
    }

    #[tokio::test]
    async fn slots_share_their_memory_and_wait_for_each_other() {
        let pool = Pool::new(2);
        let mut a = pool.slot(Duration::from_secs(1)).await.unwrap();
        let phc = a.hash("pw").unwrap();
        let b = pool.try_slot().unwrap();
        assert!(pool.try_slot().is_none());
        assert!(pool.slot(Duration::from_millis(10)).await.is_none());
        drop(b);
        drop(a);
        // Both memories are back; the one that hashed is reused, not reallocated.
        let kept: Vec<usize> = pool.lock().iter().map(|m| m.blocks.len()).collect();
        assert_eq!(kept.iter().filter(|n| **n == KEPT_BLOCKS).count(), 1);
        let mut c = pool.try_slot().unwrap();
        let mut d = pool.try_slot().unwrap();
        assert!(c.verify(&phc, "pw") && d.verify(&phc, "pw"));
        drop((c, d));
        assert!(pool.lock().iter().all(|m| m.blocks.len() == KEPT_BLOCKS));
        assert_eq!(pool.lock().len(), 2);
        assert!(!format!("{:?}", pool.try_slot()).contains("pw"));
    }

    #[test]
    fn the_policy_counts_characters_and_bounds_bytes() {
        let p = Policy::default();
        assert_eq!(p.min_chars, 12);
        assert_eq!(
            p.check("hunter2").unwrap_err(),
            PolicyError::TooShort { min: 12 }
        );
        assert_eq!(p.check("hunter2").unwrap_err().code(), "password_too_short");
        assert_eq!(
            p.check("abcdefghijk"),
            Err(PolicyError::TooShort { min: 12 })
        );
        assert_eq!(p.check("abcdefghijkl"), Ok(()));
        // Characters, not bytes: 11 two-byte characters (22 bytes) are too
        // few, 12 four-byte ones are enough.
        assert!(p.check(&"é".repeat(11)).is_err());
        assert_eq!(p.check(&"🔑".repeat(12)), Ok(()));
        // No composition rules: letters alone, digits alone, spaces are fine.
        for ok in ["aaaaaaaaaaaa", "123456789012", "correct horse battery"] {
            assert_eq!(p.check(ok), Ok(()), "{ok}");
        }
        // The most that fits, and one byte more.
        assert_eq!(p.check(&"x".repeat(MAX_BYTES)), Ok(()));
        let long = p.check(&"x".repeat(MAX_BYTES + 1)).unwrap_err();
        assert_eq!(long, PolicyError::TooLong { max: MAX_BYTES });
        assert_eq!(long.code(), "password_too_long");
        // Every password of the greatest minimum fits.
        let most = Policy {
            min_chars: MOST_MIN_CHARS,
        };
        assert_eq!(most.check(&"🔑".repeat(MOST_MIN_CHARS)), Ok(()));
        // The messages say what to do and never quote the password.
        for e in [p.check("hunter2").unwrap_err(), long] {
            let m = e.to_string();
            assert!(m.contains("choose") && !m.contains("hunter2"), "{m}");
        }
    }
}
