#![no_main]
// See tally_fuzz::config for the input format and the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_fuzz::config::check(data));
