//! The admin listener over a plain socket: its API, `/metrics`, `/readyz`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long an admin exchange may take.
const GUARD: Duration = Duration::from_secs(30);

/// A minimal HTTP/1.1 exchange over a plain socket (the admin listener is plain on loopback).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, String)>,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    if let Some(t) = token {
        req += &format!("authorization: Bearer {t}\r\n");
    }
    let (ctype, body) = body.unwrap_or(("", String::new()));
    if !ctype.is_empty() {
        req += &format!("content-type: {ctype}\r\n");
    }
    req += &format!("content-length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let text = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, text)
}

/// One JSON request to the admin listener on `port`: status and JSON body (a body that is
/// not JSON comes back as a string).
pub fn api(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, text) = http(
        port,
        method,
        path,
        token,
        body.map(|b| ("application/json", b.to_string())),
    );
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json)
}

/// The held calls the admin listener on `port` lists to `token`, once there are `n`.
pub fn wait_pending(port: u16, token: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + GUARD;
    loop {
        let (status, body) = api(port, "GET", "/approvals", Some(token), None);
        assert_eq!(status, 200, "{body}");
        let calls = body["approvals"].as_array().unwrap().clone();
        if calls.len() == n {
            return calls;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the admin listener on {port} lists {} held calls, not {n}: {body}",
            calls.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
