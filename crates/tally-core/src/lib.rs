//! The pure core of tally: no I/O, no async, no clock.
//!
//! * [`jose`]: strict compact-JWS parsing and verification ([`jose::VerifiedToken`]);
//! * [`record`]: the [`record::IssuanceRecord`] and its deterministic encoding;
//! * [`merkle`]: RFC 6962 Merkle tree, inclusion and consistency proofs;
//! * [`note`]: C2SP signed notes and `tlog-checkpoint` checkpoints;
//! * [`registry`]: the in-memory index of live tokens;
//! * [`gate`]: the decision procedure ([`gate::TalliedToken`]);
//! * [`verdict`]: stable reason codes;
//! * [`seal`]: sealing secrets at rest under the master key;
//! * [`totp`]: RFC 6238 one-time passwords; [`throttle`]: login backoff;
//! * [`target`]: the one request-target normaliser routes are decided on;
//! * [`flood`]: every refusal accounted for under a flood, in bounded bytes;
//! * [`digest`]: a token's identity, the SHA-256 of its exact bytes;
//! * [`misses`]: forged tokens the store already said it never issued;
//! * [`dpop`]: RFC 9449 proofs and their replay cache; [`dpop_nonce`]: server
//!   nonces;
//! * [`containment`]: blocks by address (CIDR), device, subject or token;
//! * [`ratelimit`]: per-client token buckets for expensive work;
//! * [`endpoint`]: which URLs tally calls, and how it shows them.
//!
//! ```
//! use tally_core::merkle::{MerkleTree, leaf_hash, verify_inclusion};
//! let mut tree = MerkleTree::new();
//! for i in 0u8..5 {
//!     tree.push(leaf_hash(&[i]));
//! }
//! let proof = tree.inclusion_proof(3, 5).unwrap();
//! assert!(verify_inclusion(&leaf_hash(&[3]), 3, 5, &proof, &tree.root()).is_ok());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod containment;
pub mod digest;
pub mod dpop;
pub mod dpop_nonce;
pub mod endpoint;
pub mod flood;
pub mod gate;
pub mod jose;
pub mod merkle;
pub mod misses;
pub mod note;
pub mod ratelimit;
pub mod record;
pub mod registry;
pub mod seal;
pub mod target;
pub mod throttle;
pub mod tiles;
pub mod totp;
pub mod verdict;
