//! DPoP server nonces (RFC 9449 sections 8 and 9): values a server hands out
//! in `DPoP-Nonce` and then requires in every proof's `nonce` claim, so that a
//! proof made in advance (by malware that can sign but not always run) is
//! useless.
//!
//! A [`NonceSource`] keeps no state per client: a nonce is the number of a
//! time window and a MAC over it, `BASE64URL(window (8 bytes, big-endian) ||
//! HMAC-SHA256(secret, "tally dpop nonce" || window)[..16])`. A nonce is
//! accepted during its own window and the next one, so a client that fetched
//! one just before the window turned has at least one full window to use it.
//! Replay of a whole proof is stopped by the `jti` replay cache, not here.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const LABEL: &[u8] = b"tally dpop nonce";
const TAG_BYTES: usize = 16;

/// Issues and checks stateless DPoP nonces.
pub struct NonceSource {
    key: hmac::Key,
    window_secs: i64,
}

impl NonceSource {
    /// A source keyed with `secret`, whose nonces change every `window_secs`
    /// seconds (at least 1).
    pub fn new(secret: &[u8; 32], window_secs: i64) -> NonceSource {
        NonceSource {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            window_secs: window_secs.max(1),
        }
    }

    fn window(&self, now: i64) -> i64 {
        now.div_euclid(self.window_secs)
    }

    fn tag(&self, window: i64) -> [u8; TAG_BYTES] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(LABEL);
        ctx.update(&window.to_be_bytes());
        let full = ctx.sign();
        let mut out = [0u8; TAG_BYTES];
        out.copy_from_slice(&full.as_ref()[..TAG_BYTES]);
        out
    }

    /// The nonce to hand out at unix time `now`.
    pub fn current(&self, now: i64) -> String {
        let w = self.window(now);
        let mut raw = Vec::with_capacity(8 + TAG_BYTES);
        raw.extend_from_slice(&w.to_be_bytes());
        raw.extend_from_slice(&self.tag(w));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `nonce` was issued by this source in the current window or the
    /// one before. Anything else (another server's nonce, a forged or
    /// truncated one, an old one) is refused. The MAC is compared in constant
    /// time.
    pub fn accepts(&self, nonce: &str, now: i64) -> bool {
        if nonce.len() > 64 {
            return false;
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if raw.len() != 8 + TAG_BYTES {
            return false;
        }
        let mut wb = [0u8; 8];
        wb.copy_from_slice(&raw[..8]);
        let w = i64::from_be_bytes(wb);
        let current = self.window(now);
        if w != current && w != current.saturating_sub(1) {
            return false;
        }
        let expected = self.tag(w);
        bool::from(subtle::ConstantTimeEq::ct_eq(&raw[8..], &expected[..]))
    }
}

impl std::fmt::Debug for NonceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceSource")
            .field("window_secs", &self.window_secs)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> NonceSource {
        NonceSource::new(&[7u8; 32], 60)
    }

    #[test]
    fn a_nonce_lives_for_its_window_and_the_next() {
        let s = source();
        let n = s.current(1_000_020); // window 16667 covers 1_000_020..1_000_080
        assert!(s.accepts(&n, 1_000_020));
        assert!(s.accepts(&n, 1_000_079));
        assert!(s.accepts(&n, 1_000_139), "next window still accepts it");
        assert!(!s.accepts(&n, 1_000_140), "two windows later it is stale");
        assert!(!s.accepts(&n, 1_000_019), "not before its own window");
        assert_ne!(n, s.current(1_000_080));
    }

    #[test]
    fn another_key_or_any_change_is_refused() {
        let s = source();
        let other = NonceSource::new(&[8u8; 32], 60);
        let now = 5_000_000;
        let n = s.current(now);
        assert!(!other.accepts(&n, now));
        // Flip each character of the nonce in turn.
        for i in 0..n.len() {
            let mut b = n.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let m = String::from_utf8(b).unwrap();
            if m != n {
                assert!(!s.accepts(&m, now), "mutated at {i}: {m}");
            }
        }
        // A future window with a made-up MAC, truncations, junk.
        let mut raw = (s.window(now) + 1).to_be_bytes().to_vec();
        raw.extend_from_slice(&[0u8; TAG_BYTES]);
        assert!(!s.accepts(&URL_SAFE_NO_PAD.encode(raw), now));
        assert!(!s.accepts(&n[..n.len() - 1], now));
        assert!(!s.accepts("", now));
        assert!(!s.accepts("!!!!", now));
        assert!(!s.accepts(&"A".repeat(100), now));
    }

    #[test]
    fn extreme_clocks_do_not_panic() {
        let s = source();
        for now in [i64::MIN, -1, 0, i64::MAX] {
            let n = s.current(now);
            assert!(s.accepts(&n, now));
        }
    }
}
