//! Entry bundles (C2SP `tlog-tiles`): the entries of one level-0 tile,
//! each as a big-endian `u16` length followed by its bytes.

/// The longest entry a bundle can hold.
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;

/// Why bytes are not an entry bundle, or an entry cannot go in one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// An entry longer than [`MAX_ENTRY_BYTES`].
    #[error("entry of {0} bytes is longer than a tile bundle allows (65535)")]
    TooLong(usize),
    /// The bytes end inside an entry.
    #[error("entry bundle truncated inside entry {0}")]
    Truncated(usize),
    /// More entries than the tile is wide.
    #[error("entry bundle holds more than {0} entries")]
    TooMany(u16),
}

/// Appends `entry` to the bundle `out`.
pub fn encode_entry(out: &mut Vec<u8>, entry: &[u8]) -> Result<(), BundleError> {
    let len = u16::try_from(entry.len()).map_err(|_| BundleError::TooLong(entry.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(entry);
    Ok(())
}

/// The entries of a bundle of at most `width` entries.
pub fn decode_bundle(mut bytes: &[u8], width: u16) -> Result<Vec<&[u8]>, BundleError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if out.len() == usize::from(width) {
            return Err(BundleError::TooMany(width));
        }
        let (len, rest) = bytes
            .split_first_chunk::<2>()
            .ok_or(BundleError::Truncated(out.len()))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < len {
            return Err(BundleError::Truncated(out.len()));
        }
        let (entry, rest) = rest.split_at(len);
        out.push(entry);
        bytes = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_hostile_bundles_are_refused() {
        let mut b = Vec::new();
        for e in [&b""[..], b"a", &[7u8; 300][..], &[1u8; MAX_ENTRY_BYTES][..]] {
            encode_entry(&mut b, e).unwrap();
        }
        let got = decode_bundle(&b, 256).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(
            (got[0], got[1], got[2].len(), got[3].len()),
            (&b""[..], &b"a"[..], 300, MAX_ENTRY_BYTES)
        );
        assert_eq!(
            encode_entry(&mut Vec::new(), &vec![0; MAX_ENTRY_BYTES + 1]),
            Err(BundleError::TooLong(MAX_ENTRY_BYTES + 1))
        );
        assert_eq!(decode_bundle(&b, 3), Err(BundleError::TooMany(3)));
        assert_eq!(decode_bundle(&[0], 256), Err(BundleError::Truncated(0)));
        assert_eq!(
            decode_bundle(&[0, 5, 1, 2], 256),
            Err(BundleError::Truncated(0))
        );
        assert_eq!(decode_bundle(&[], 256), Ok(vec![]));
    }
}
