//! BoringSSL TLS 1.3 peer for the mcp-pqtls interop matrix.
//!
//! Built from the `boring` crate, whose `boring-sys` bundles BoringSSL and always applies
//! Cloudflare's `boring-pq.patch` series (so this is "BoringSSL as shipped by the boring
//! crate": upstream plus P256Kyber768Draft00 0xfe32 / X25519Kyber768Draft00 0x6399,
//! `SSL_use_second_keyshare` and ML-DSA in the client's default signature algorithms).
//!
//! Same contract as the other peers (Go, Node, OpenSSL wrappers):
//!
//! ```text
//! boring-peer server --port PORT --cert PEM --key PEM [--groups G1,G2,...]
//! boring-peer client --connect HOST:PORT --servername NAME --ca PEM [--groups G1,G2,...]
//! ```
//!
//! Group names are IANA names (case-insensitive on input, printed canonically). A group
//! BoringSSL cannot do yields `{"unsupported":...}` and exit code 3; usage errors exit 2.
//!
//! BoringSSL behaviour worth knowing (boring 5.4.0):
//! * Default groups (both roles): X25519MLKEM768, P256Kyber768Draft00 (0xfe32, a
//!   pre-standard codepoint added by the boring patch), X25519, P-256, P-384.
//! * Client key shares: one for the first group of the list, plus one for the first group
//!   of the other kind (post-quantum vs classical; the PQ kinds are X25519MLKEM768,
//!   MLKEM1024 and the two Kyber drafts). Default list: X25519MLKEM768 + X25519.
//! * Server group choice follows the CLIENT's preference order among the server's groups
//!   (BoringSSL uses its own order only with SSL_OP_CIPHER_SERVER_PREFERENCE, which this
//!   peer leaves at BoringSSL's default: off); it sends HelloRetryRequest if the client
//!   sent no key share for the chosen group.
//! * ML-DSA: the boring patch series also makes clients advertise (and verify) ML-DSA-44/65/87
//!   by default, ahead of the classical algorithms (upstream BoringSSL only signs with it by
//!   default); servers load seed-only PKCS#8 ML-DSA keys, the form BoringSSL accepts.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::exit;
use std::time::{Duration, Instant};

use boring::error::ErrorStack;
use boring::ssl::{
    HandshakeError, Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslStream,
    SslVerifyMode, SslVersion,
};
use boring_sys as ffi;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 16 * 1024;

/// (IANA name, codepoint, BoringSSL's name for it or None if BoringSSL lacks it).
const GROUPS: &[(&str, u16, Option<&str>)] = &[
    ("X25519MLKEM768", 0x11ec, Some("X25519MLKEM768")),
    ("SecP256r1MLKEM768", 0x11eb, None),
    ("SecP384r1MLKEM1024", 0x11ed, None),
    ("MLKEM768", 0x0201, None),
    ("MLKEM1024", 0x0202, Some("MLKEM1024")),
    ("X25519", 0x001d, Some("X25519")),
    ("secp256r1", 0x0017, Some("P-256")),
    ("secp384r1", 0x0018, Some("P-384")),
];

fn group_name(id: u16) -> String {
    match GROUPS.iter().find(|g| g.1 == id) {
        Some(g) => g.0.to_string(),
        None => format!("0x{id:04x}"),
    }
}

fn out(v: Value) {
    let mut o = io::stdout().lock();
    let _ = writeln!(o, "{v}");
    let _ = o.flush();
}

fn usage(msg: &str) -> ! {
    eprintln!("boring-peer: {msg}");
    eprintln!(
        "usage: boring-peer server --port PORT --cert PEM --key PEM [--groups G1,G2,...]\n       \
         boring-peer client --connect HOST:PORT --servername NAME --ca PEM [--groups G1,G2,...]"
    );
    exit(2)
}

/// BoringSSL's own text for each queued error, as `ERR_error_string_n` prints it, plus the
/// error data (e.g. "SSL alert number 40" for a received alert).
#[allow(deprecated)]
fn stack_text(stack: &ErrorStack) -> String {
    let parts: Vec<String> = stack
        .errors()
        .iter()
        .map(|e| {
            let mut buf = [0u8; 256];
            // `code()` is deprecated in favour of library_reason(), but ERR_error_string_n
            // needs the packed code. SAFETY: buf is writable for its length; BoringSSL NUL-terminates.
            unsafe { ffi::ERR_error_string_n(e.code(), buf.as_mut_ptr().cast(), buf.len()) };
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let mut s = String::from_utf8_lossy(&buf[..end]).into_owned();
            if let Some(d) = e.data().filter(|d| !d.is_empty()) {
                s.push_str(&format!(" ({d})"));
            }
            s
        })
        .collect();
    if parts.is_empty() {
        "unknown BoringSSL error".into()
    } else {
        parts.join("; ")
    }
}

fn ssl_error_text(e: &boring::ssl::Error) -> String {
    if let Some(stack) = e.ssl_error() {
        stack_text(stack)
    } else if let Some(io) = e.io_error() {
        match io.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                format!("timed out after 10 s ({io})")
            }
            _ => format!("I/O error: {io}"),
        }
    } else if e.code() == boring::ssl::ErrorCode::SYSCALL {
        "peer closed the TCP connection without a TLS alert (SSL_ERROR_SYSCALL, unexpected EOF)"
            .into()
    } else {
        format!("{e} (SSL_get_error code {})", e.code().as_raw())
    }
}

fn handshake_error_text<S>(e: HandshakeError<S>) -> String {
    match e {
        HandshakeError::SetupFailure(stack) => format!("setup failed: {}", stack_text(&stack)),
        HandshakeError::Failure(mid) | HandshakeError::WouldBlock(mid) => {
            let mut s = ssl_error_text(mid.error());
            // Name the X.509 reason when BoringSSL's queue only says CERTIFICATE_VERIFY_FAILED.
            if let Err(v) = mid.ssl().verify_result() {
                if v != boring::x509::X509VerifyError::INVALID_CALL {
                    s.push_str(&format!(
                        "; certificate verify result {}: {}",
                        v.as_raw(),
                        v.error_string()
                    ));
                }
            }
            s
        }
    }
}

enum GroupsError {
    Unsupported(String, String),
}

/// Translates the IANA names to BoringSSL's and asks BoringSSL itself whether it can do
/// each one (a scratch context with just that group), so the answer is BoringSSL's, not ours.
fn boring_groups_list(spec: &str) -> Result<String, GroupsError> {
    let mut names = Vec::new();
    for raw in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let known = GROUPS.iter().find(|g| g.0.eq_ignore_ascii_case(raw));
        let (canon, id, bname) = match known {
            Some(&(c, id, b)) => (c.to_string(), Some(id), b.unwrap_or(c).to_string()),
            // Not one of the matrix's names: hand it to BoringSSL as is (e.g. "P-521").
            None => (raw.to_string(), None, raw.to_string()),
        };
        let mut probe = SslContext::builder(SslMethod::tls()).expect("SSL_CTX_new");
        if let Err(stack) = probe.set_curves_list(&bname) {
            let idtxt = id.map(|i| format!(" (0x{i:04x})")).unwrap_or_default();
            return Err(GroupsError::Unsupported(
                canon.clone(),
                format!(
                    "BoringSSL (boring-sys 5.4.0) does not implement key exchange group {canon}{idtxt}: \
                     SSL_CTX_set1_groups_list(\"{bname}\") failed: {}",
                    stack_text(&stack)
                ),
            ));
        }
        names.push(bname);
    }
    if names.is_empty() {
        usage("--groups needs at least one group");
    }
    Ok(names.join(":"))
}

/// A TLS 1.3-only context with `--groups` applied. A group BoringSSL cannot do is reported
/// with `unsupported` (each mode words it its own way) and exit 3.
fn context(groups: Option<&str>, unsupported: fn(String, String) -> Value) -> SslContextBuilder {
    let mut b = SslContext::builder(SslMethod::tls()).expect("SSL_CTX_new");
    b.set_min_proto_version(Some(SslVersion::TLS1_3))
        .expect("min version");
    b.set_max_proto_version(Some(SslVersion::TLS1_3))
        .expect("max version");
    if let Some(spec) = groups {
        match boring_groups_list(spec) {
            Ok(list) => b.set_curves_list(&list).expect("validated groups list"),
            Err(GroupsError::Unsupported(name, reason)) => {
                out(unsupported(name, reason));
                exit(3)
            }
        }
    }
    b
}

struct Args(Vec<(String, String)>);

impl Args {
    fn parse(rest: &[String], allowed: &[&str]) -> Args {
        let mut v = Vec::new();
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .unwrap_or_else(|| usage(&format!("unexpected {k}")));
            let (key, val) = match key.split_once('=') {
                Some((a, b)) => (a.to_string(), b.to_string()),
                None => (
                    key.to_string(),
                    it.next()
                        .cloned()
                        .unwrap_or_else(|| usage(&format!("{k} needs a value"))),
                ),
            };
            if !allowed.contains(&key.as_str()) {
                usage(&format!("unknown option --{key}"));
            }
            v.push((key, val));
        }
        Args(v)
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(a, _)| a == k)
            .map(|(_, b)| b.as_str())
    }
    fn need(&self, k: &str) -> &str {
        self.get(k)
            .unwrap_or_else(|| usage(&format!("--{k} is required")))
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("server") => server(Args::parse(&argv[2..], &["port", "cert", "key", "groups"])),
        Some("client") => client(Args::parse(
            &argv[2..],
            &["connect", "servername", "ca", "groups"],
        )),
        _ => usage("first argument must be server or client"),
    }
}

// ---------------------------------------------------------------------------------------
// server

fn server(args: Args) -> ! {
    let port: u16 = args
        .need("port")
        .parse()
        .unwrap_or_else(|_| usage("bad --port"));
    let cert = args.need("cert");
    let key = args.need("key");

    let mut b = context(args.get("groups"), |name, reason| {
        json!({"unsupported": name, "reason": reason})
    });
    let load = |b: &mut SslContextBuilder| -> Result<(), String> {
        b.set_certificate_chain_file(cert)
            .map_err(|e| format!("loading certificate chain {cert}: {}", stack_text(&e)))?;
        b.set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| format!("loading private key {key}: {}", stack_text(&e)))?;
        b.check_private_key()
            .map_err(|e| format!("private key does not match certificate: {}", stack_text(&e)))
    };
    if let Err(mut e) = load(&mut b) {
        // Typically an ML-DSA key in OpenSSL's default "seed + expanded key" PKCS#8 form:
        // BoringSSL parses only the seed-only form. Report "cannot do", not a crash.
        if e.contains("PRIVATE_KEY_WAS_NOT_SEED") {
            e = format!(
                "BoringSSL accepts only seed-only ML-DSA private keys (PKCS#8 privateKey = \
                 [0] seed); this key is in another form (OpenSSL 3.5 writes seed + expanded key by \
                 default): {e}"
            );
        }
        out(json!({"unsupported": "certificate", "reason": e}));
        exit(3)
    }
    let ctx = b.build();

    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            out(json!({"event": "error", "error": format!("bind 127.0.0.1:{port}: {e}")}));
            exit(1)
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    out(json!({"event": "listening", "port": port}));

    for conn in listener.incoming() {
        let tcp = match conn {
            Ok(t) => t,
            Err(e) => {
                out(json!({"event": "error", "error": format!("accept: {e}")}));
                continue;
            }
        };
        match serve_one(&ctx, tcp) {
            Ok(group) => out(json!({"event": "handshake", "group": group})),
            Err(e) => out(json!({"event": "error", "error": e})),
        }
    }
    exit(1)
}

fn serve_one(ctx: &SslContext, tcp: TcpStream) -> Result<String, String> {
    let _ = tcp.set_read_timeout(Some(TIMEOUT));
    let _ = tcp.set_write_timeout(Some(TIMEOUT));
    let ssl = Ssl::new(ctx).map_err(|e| stack_text(&e))?;
    let mut s = ssl.accept(tcp).map_err(handshake_error_text)?;
    let group = s
        .ssl()
        .curve()
        .map(group_name)
        .unwrap_or_else(|| "none".into());

    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(format!(
                "handshake ok ({group}) but HTTP request head exceeds 16 KiB"
            ));
        }
        match s.ssl_read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "handshake ok ({group}) but connection closed before request head"
                ))
            }
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => {
                return Err(format!(
                    "handshake ok ({group}) but reading request failed: {}",
                    ssl_error_text(&e)
                ))
            }
        }
    }
    let body = json!({"peer": "boringssl", "group": group, "version": "TLSv1.3"}).to_string();
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes())
        .and_then(|_| s.flush())
        .map_err(|e| format!("handshake ok ({group}) but writing response failed: {e}"))?;
    let _ = s.shutdown();
    Ok(group)
}

// ---------------------------------------------------------------------------------------
// client

fn fail(msg: String) -> ! {
    out(json!({"ok": false, "error": msg}));
    exit(1)
}

fn client(args: Args) -> ! {
    let deadline = Instant::now() + TIMEOUT;
    let connect = args.need("connect");
    let name = args.need("servername");
    let ca = args.need("ca");

    // Given order = preference order. Key shares: the first group, plus the first group of
    // the other kind (PQ vs classical) if the list has one.
    let mut b = context(args.get("groups"), |name, reason| {
        json!({"ok": false, "unsupported": name, "reason": reason})
    });
    b.set_verify(SslVerifyMode::PEER);
    if let Err(e) = b.set_ca_file(ca) {
        fail(format!("loading CA file {ca}: {}", stack_text(&e)));
    }
    let ctx = b.build();

    let mut ssl = Ssl::new(&ctx).unwrap_or_else(|e| fail(stack_text(&e)));
    match name.parse::<IpAddr>() {
        Ok(ip) => ssl.param_mut().set_ip(ip).expect("set_ip"),
        Err(_) => {
            ssl.set_hostname(name)
                .unwrap_or_else(|e| fail(stack_text(&e)));
            ssl.param_mut().set_host(name).expect("set_host");
        }
    }

    let addrs: Vec<SocketAddr> = match connect.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => fail(format!("resolving {connect}: {e}")),
    };
    let mut last = None;
    let mut tcp = None;
    for a in addrs {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match TcpStream::connect_timeout(&a, left) {
            Ok(t) => {
                tcp = Some(t);
                break;
            }
            Err(e) => last = Some(format!("connect {a}: {e}")),
        }
    }
    let tcp = tcp.unwrap_or_else(|| fail(last.unwrap_or_else(|| format!("{connect}: no address"))));
    set_timeouts(&tcp, deadline);

    let mut s = match ssl.connect(tcp) {
        Ok(s) => s,
        Err(e) => fail(handshake_error_text(e)),
    };
    let group = s
        .ssl()
        .curve()
        .map(group_name)
        .unwrap_or_else(|| "none".into());
    let version = s.ssl().version_str().to_string();

    let req = format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()).and_then(|_| s.flush()) {
        fail(format!(
            "handshake ok ({group}) but sending request failed: {e}"
        ));
    }
    let raw = match read_response(&mut s, deadline) {
        Ok(r) => r,
        Err(e) => fail(format!(
            "handshake ok ({group}) but reading response failed: {e}"
        )),
    };
    match parse_http(&raw) {
        Ok((status, body)) => {
            out(
                json!({"ok": true, "group": group, "version": version, "status": status, "body": body}),
            );
            exit(0)
        }
        Err(e) => fail(format!("handshake ok ({group}) but bad HTTP response: {e}")),
    }
}

fn set_timeouts(tcp: &TcpStream, deadline: Instant) {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = tcp.set_read_timeout(Some(left));
    let _ = tcp.set_write_timeout(Some(left));
}

/// Reads to EOF. A peer that closes TCP without close_notify (common: OpenSSL's -www,
/// many HTTP servers) counts as EOF once something was read.
fn read_response(s: &mut SslStream<TcpStream>, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if Instant::now() >= deadline {
            return Err("timed out after 10 s".into());
        }
        set_timeouts(s.get_ref(), deadline);
        match s.ssl_read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => {
                let code = e.code();
                if code == boring::ssl::ErrorCode::ZERO_RETURN {
                    return Ok(raw);
                }
                if code == boring::ssl::ErrorCode::SYSCALL
                    && e.io_error().is_none()
                    && !raw.is_empty()
                {
                    return Ok(raw);
                }
                return Err(ssl_error_text(&e));
            }
        }
    }
}

fn parse_http(raw: &[u8]) -> Result<(u16, String), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of header block")?;
    let mut head = BufReader::new(&raw[..split]).lines();
    let status_line = head
        .next()
        .ok_or("empty response")?
        .map_err(|e| e.to_string())?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in head.map_while(Result::ok) {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    } else if let Some(n) = length {
        if body.len() < n {
            return Err(format!(
                "body has {} bytes, Content-Length says {n}",
                body.len()
            ));
        }
        body.truncate(n);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_txt = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_txt:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or(&[]);
    }
}
