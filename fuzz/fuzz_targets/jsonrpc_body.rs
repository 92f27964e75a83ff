#![no_main]
// See mcp_pqtls::fuzzing::jsonrpc_body for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_pqtls::fuzzing::jsonrpc_body(data));
