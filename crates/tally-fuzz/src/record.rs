//! Issuance record decoding ([`tally_core::record::IssuanceRecord::decode`]).

use tally_core::record::IssuanceRecord;

/// Runs every property on `data`; panics when one is broken.
pub fn check(data: &[u8]) {
    if let Ok(record) = IssuanceRecord::decode(data) {
        // Decoding is strict: a record decodes only from its one encoding, so
        // a leaf hash cannot be computed over two different byte strings for
        // the same record.
        let bytes = record.encode().expect("a decoded record encodes");
        assert_eq!(bytes, data, "a record decoded from non-canonical bytes");
        assert_eq!(
            record.leaf_hash().expect("leaf hash"),
            tally_core::merkle::leaf_hash(data)
        );
    }
}
