#![no_main]
// See mcp_pqtls::fuzzing::client_hello_policy for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_pqtls::fuzzing::client_hello_policy(data));
