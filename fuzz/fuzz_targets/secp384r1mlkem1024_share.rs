#![no_main]
// See mcp_pqtls::fuzzing::secp384r1mlkem1024_share for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_pqtls::fuzzing::secp384r1mlkem1024_share(data));
