#![no_main]
// See mcp_pqtls::fuzzing::certificate_der for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_pqtls::fuzzing::certificate_der(data));
