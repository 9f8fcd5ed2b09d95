//! Tests of the JOSE module: the attack table, RFC vectors, keys, claims
//! policy, and randomized round trips and mutations.

mod attacks;
mod fuzz;
mod keys;
mod policy;
mod support;
mod vectors;
