#![no_main]
// See tally_fuzz::tiles for the input format and the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzz::tiles::check(data));
