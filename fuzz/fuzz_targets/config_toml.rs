#![no_main]
// See mcp_pqtls::fuzzing::config_toml for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_pqtls::fuzzing::config_toml(data));
