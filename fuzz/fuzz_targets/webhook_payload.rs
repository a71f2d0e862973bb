#![no_main]
include!("../checks.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| webhook_payload(data));
