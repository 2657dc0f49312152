#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| credentialflow::fuzzing::lua_caps(data));
