#![no_main]
// See tally_fuzz::note for the input format and the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzz::note::check(data));
