#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| credentialflow::fuzzing::http1_path(data));
