//! HyperLogLog registers and their estimate: 2^[`PRECISION`] one-byte
//! registers, read with Ertl's improved estimator (2017, algorithm 6).
//!
//! Invariant: a register holds the largest rank of the hashes whose top
//! [`PRECISION`] bits name it, so it is at most `MAX_RANK`, and raising
//! registers is order-independent (the registers of a union are the
//! register-wise maximum).

/// HyperLogLog precision: a hash's top `PRECISION` bits pick one of 2048 registers.
pub const PRECISION: u8 = 11;

/// Number of registers, one byte each.
pub(super) const REGISTERS: usize = 1 << PRECISION;

/// Bits left after the register index; ranks run from 1 to `RANK_BITS + 1`.
const RANK_BITS: u8 = 64 - PRECISION;

/// Largest register value: the remaining 53 bits were all zero.
const MAX_RANK: u8 = RANK_BITS + 1;

/// `1 / (2 ln 2)`, the limit of the HyperLogLog bias constant for many registers.
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

/// Register index and rank of a hash: the top `PRECISION` bits pick the register, the
/// rank is one more than the number of leading zeros in the remaining 53 bits.
fn register_of(h: u64) -> (usize, u8) {
    let index = (h >> RANK_BITS) as usize;
    let rest = h << PRECISION;
    // rest != 0 has a one among its top 53 bits, so leading_zeros() <= 52.
    let rank = if rest == 0 {
        MAX_RANK
    } else {
        rest.leading_zeros() as u8 + 1
    };
    (index, rank)
}

/// Raises the register of `h`; true when it changed.
pub(super) fn set_register(regs: &mut [u8; REGISTERS], h: u64) -> bool {
    let (index, rank) = register_of(h);
    // index < 2^PRECISION = REGISTERS by construction.
    let r = &mut regs[index];
    if rank > *r {
        *r = rank;
        true
    } else {
        false
    }
}

/// Ertl's improved raw estimator (2017, algorithm 6) over a register histogram.
pub(super) fn estimate_registers(regs: &[u8; REGISTERS]) -> u64 {
    let mut counts = [0u32; MAX_RANK as usize + 1];
    for &r in regs.iter() {
        counts[usize::from(r.min(MAX_RANK))] += 1;
    }
    let m = REGISTERS as f64;
    if counts[0] as usize == REGISTERS {
        return 0;
    }
    let mut z = m * tau(1.0 - f64::from(counts[usize::from(MAX_RANK)]) / m);
    for k in (1..=usize::from(RANK_BITS)).rev() {
        z = 0.5 * (z + f64::from(counts[k]));
    }
    z += m * sigma(f64::from(counts[0]) / m);
    (ALPHA_INF * m * m / z).round() as u64
}

/// `σ(x) = x + Σ_{k≥1} x^(2^k) · 2^(k−1)` for `0 ≤ x < 1`.
fn sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

/// `τ(x) = (1 − x − Σ_{k≥1} (1 − x^(2^−k))² · 2^−k) / 3` for `0 ≤ x ≤ 1`.
fn tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_ranks() {
        assert_eq!(register_of(0), (0, MAX_RANK));
        assert_eq!(register_of(u64::MAX), (REGISTERS - 1, 1));
        assert_eq!(register_of(1), (0, RANK_BITS));
        assert_eq!(register_of(1 << RANK_BITS), (1, MAX_RANK));
        assert_eq!(register_of((1 << RANK_BITS) - 1), (0, 1));
    }
}
