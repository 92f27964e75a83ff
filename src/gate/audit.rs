//! The audit log: one JSON line per JSON-RPC message (or per HTTP request that carried
//! none), written by a thread of its own so a slow disk never holds up a request.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::approval::Decided;
use super::metrics::GateMetrics;
use crate::throttle::LogThrottle;

/// How long the writer waits after a record for more to write with it.
const GROUP_COMMIT: Duration = Duration::from_millis(2);

/// Records queued for the writer at most by default (`[audit] queue-records`); beyond,
/// records are dropped and counted (`gate_audit_dropped_total`), or with `fail-closed`
/// calls are refused, rather than make requests wait.
pub const DEFAULT_QUEUE: usize = 8192;

/// How long [`AuditLog::close`] waits for the writer to write what is queued.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// `O_NOFOLLOW`: opening a symlink fails with `ELOOP` instead of writing through it. Spelt
/// out here because `libc` is not a direct dependency (values from the kernel headers).
#[cfg(all(target_os = "linux", any(target_arch = "aarch64", target_arch = "arm")))]
const O_NOFOLLOW: i32 = 0o100000;
#[cfg(all(
    target_os = "linux",
    not(any(target_arch = "aarch64", target_arch = "arm"))
))]
const O_NOFOLLOW: i32 = 0o400000;
#[cfg(not(target_os = "linux"))]
const O_NOFOLLOW: i32 = 0x100;
/// `ELOOP`, what opening a symlink with `O_NOFOLLOW` fails with.
#[cfg(target_os = "linux")]
const ELOOP: i32 = 40;
#[cfg(not(target_os = "linux"))]
const ELOOP: i32 = 62;
/// One audit record. Fields without a value are written as `null`, so every line has the
/// same keys.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct Record {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// The mTLS client identity.
    pub client_identity: Option<String>,
    /// The verified token's subject.
    pub subject: Option<String>,
    /// The client's address (`ip:port`).
    pub client_addr: String,
    /// The TLS group, by IANA name.
    pub tls_group: Option<String>,
    /// Whether the group is post-quantum.
    pub pq: Option<bool>,
    /// The `Mcp-Session-Id` the request carried (2025-11-25 and earlier; legacy HTTP+SSE's
    /// `session_id`).
    pub session_id: Option<String>,
    /// The `MCP-Protocol-Version` the request carried (2026-07-28 has no sessions: this and
    /// the client address say who called).
    pub protocol_version: Option<String>,
    /// The client's name from the `_meta` of a 2026-07-28 request (`clientInfo.name`).
    pub client_name: Option<String>,
    /// The HTTP method.
    pub http_method: String,
    /// The request path.
    pub path: String,
    /// The JSON-RPC method (none for a response, or a request without a JSON-RPC body).
    pub method: Option<String>,
    /// The tool of a `tools/call`.
    pub tool: Option<String>,
    /// The JSON-RPC id.
    pub jsonrpc_id: Option<Value>,
    /// `allowed` or `refused`.
    pub decision: Decision,
    /// The rule that decided (allowed or refused), or the gate step that refused: `auth`,
    /// `scope`, `parse`, `headers`, `body-size`, `rate-limit:<name>`, `batch`.
    pub rule: Option<String>,
    /// Why it was refused, in words.
    pub reason: Option<String>,
    /// The HTTP status the client got (the upstream's, or the gate's own).
    pub status: u16,
    /// Time from the request to the response head, in milliseconds.
    pub duration_ms: f64,
    /// What became of a call held for approval (`require-approval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Decided>,
    /// The JSON-RPC message as compact JSON text, with `include-bodies` only; written as
    /// the record's last key, `body`, as JSON (not as a string).
    #[serde(skip)]
    pub body: Option<String>,
    /// The bearer token, with `include-tokens` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// What the gate did with a call: the `decision` of its [`Record`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Decision {
    /// Sent upstream (the record's default: a call is recorded before it is decided).
    #[default]
    Allowed,
    /// Answered by the gate, never sent upstream.
    Refused,
}

/// Where audit records go, and what they may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditSettings {
    /// A file (appended to) or `-` for stdout.
    pub path: PathBuf,
    /// Record each JSON-RPC message itself.
    pub include_bodies: bool,
    /// Record the bearer token.
    pub include_tokens: bool,
    /// Refuse calls (503) rather than drop their records when the queue is full.
    pub fail_closed: bool,
    /// Records queued for the writer at most.
    pub queue: usize,
}

/// A running audit log. Cloning shares the writer; the last clone dropped stops it
/// (without waiting: see [`AuditLog::close`]).
#[derive(Clone, Debug)]
pub struct AuditLog {
    inner: Arc<Inner>,
    /// What the records may hold.
    pub settings: Arc<AuditSettings>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    metrics: Arc<GateMetrics>,
    dropped_log: LogThrottle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// The queue between requests and the writer thread.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    lines: VecDeque<String>,
    /// Places promised to admitted calls (`fail-closed`): never given to other records.
    reserved: usize,
    closed: bool,
    /// The writer has written everything and stopped.
    done: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves a plain queue behind; it is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Places in the audit queue held for the records of one admitted call, so that they can
/// never be dropped; what is not used is given back when this is dropped.
#[derive(Debug)]
pub struct Reservation {
    shared: Arc<Shared>,
    left: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.left > 0 {
            let mut s = self.shared.lock();
            s.reserved = s.reserved.saturating_sub(self.left);
        }
    }
}

impl AuditLog {
    /// Opens the file (or stdout) and starts the writer thread. A file is created 0600 and
    /// never through a symlink; an existing one readable by group or others is warned of.
    pub fn open(settings: AuditSettings, metrics: Arc<GateMetrics>) -> Result<Self, AuditError> {
        let out: Box<dyn Write + Send> = if settings.path == Path::new("-") {
            Box::new(io::stdout())
        } else {
            Box::new(open_file(&settings.path)?)
        };
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
            capacity: settings.queue.max(1),
        });
        let path = settings.path.clone();
        let for_writer = shared.clone();
        let writer_metrics = metrics.clone();
        let writer = std::thread::Builder::new()
            .name("mcp-pqtls-audit".into())
            .spawn(move || write_loop(&for_writer, out, &path, &writer_metrics))
            .map_err(AuditError::Writer)?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                writer: Mutex::new(Some(writer)),
                metrics,
                dropped_log: LogThrottle::default(),
            }),
            settings: Arc::new(settings),
        })
    }

    /// Holds `n` places in the queue for the records of an admitted call; `None` when the
    /// queue (with what is already held) has no room.
    pub fn reserve(&self, n: usize) -> Option<Reservation> {
        let shared = &self.inner.shared;
        let mut s = shared.lock();
        if s.closed || s.lines.len() + s.reserved + n > shared.capacity {
            return None;
        }
        s.reserved += n;
        Some(Reservation {
            shared: shared.clone(),
            left: n,
        })
    }

    /// Queues a record; never waits. Without room it is dropped: an ERROR line (throttled)
    /// and `gate_audit_dropped_total`.
    pub fn write(&self, record: &Record) {
        self.queue(record, None);
    }

    /// Queues a record in a place `reservation` holds (if it has one left).
    pub fn write_reserved(&self, record: &Record, reservation: &mut Reservation) {
        self.queue(record, Some(reservation));
    }

    fn queue(&self, record: &Record, reservation: Option<&mut Reservation>) {
        let Some(line) = line(record) else { return };
        let shared = &self.inner.shared;
        let mut s = shared.lock();
        let held = match reservation {
            Some(r) if r.left > 0 && Arc::ptr_eq(&r.shared, shared) => {
                r.left -= 1;
                s.reserved = s.reserved.saturating_sub(1);
                true
            }
            _ => false,
        };
        if !s.closed && (held || s.lines.len() + s.reserved < shared.capacity) {
            s.lines.push_back(line);
            drop(s);
            shared.wake.notify_one();
            self.inner.metrics.audit_records.fetch_add(1, Relaxed);
            return;
        }
        let closed = s.closed;
        drop(s);
        self.inner.metrics.audit_dropped.fetch_add(1, Relaxed);
        if let Some(not_logged) = self.inner.dropped_log.admit() {
            tracing::error!(
                path = %self.settings.path.display(),
                closed,
                not_logged,
                "Audit record dropped: the audit queue is full (the writer is behind) or closed"
            );
        }
    }

    /// Stops taking records, writes and flushes what is queued, and joins the writer,
    /// waiting at most [`CLOSE_WAIT`]. Call once the server has drained: the records of
    /// calls cut off by the drain (status 499) are queued by then. Later records are dropped
    /// (and counted).
    pub fn close(&self) {
        let shared = &self.inner.shared;
        shared.lock().closed = true;
        shared.wake.notify_all();
        let deadline = std::time::Instant::now() + CLOSE_WAIT;
        let mut s = shared.lock();
        while !s.done {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                let unwritten = s.lines.len();
                drop(s);
                tracing::error!(
                    path = %self.settings.path.display(),
                    unwritten,
                    "Audit log writer did not finish within {CLOSE_WAIT:?}; records still queued are lost"
                );
                return;
            }
            s = shared
                .wake
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(s);
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

/// A record as one JSON line; the body, already JSON text, goes in as it is.
fn line(record: &Record) -> Option<String> {
    let mut line = serde_json::to_string(record).ok()?;
    if let Some(body) = &record.body {
        // The record is an object: its closing brace makes room for one more key.
        line.pop();
        line.push_str(",\"body\":");
        line.push_str(body);
        line.push('}');
    }
    Some(line)
}

/// Why the audit log could not be opened: the gate does not start without it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// `audit.path` could not be opened for appending.
    #[error("audit.path: cannot open {}: {source}{}", path.display(), symlink_hint(*symlink))]
    Open {
        /// The file.
        path: PathBuf,
        /// It is a symlink (refused: `O_NOFOLLOW`).
        symlink: bool,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("audit: cannot start the writer thread: {0}")]
    Writer(#[source] io::Error),
}

fn symlink_hint(symlink: bool) -> &'static str {
    if symlink {
        " (a symlink: the audit log is never written through one)"
    } else {
        ""
    }
}

fn open_file(path: &Path) -> Result<std::fs::File, AuditError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let named = |source: io::Error| AuditError::Open {
        path: path.to_owned(),
        symlink: source.raw_os_error() == Some(ELOOP),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(O_NOFOLLOW)
        .open(path)
        .map_err(named)?;
    let mode = file.metadata().map_err(named)?.mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "The audit log is readable or writable by group or others; it holds session ids and subjects (chmod 600 it)"
        );
    }
    Ok(file)
}

/// Time between attempts while writes fail.
const RETRY: Duration = Duration::from_secs(1);

/// Writes what is queued until closed. A batch whose write fails (a full disk, a removed
/// mount) goes back to the front of the queue and is tried again every [`RETRY`]: records
/// are kept, not dropped, while the queue fills; past its capacity new records are dropped
/// and counted, or with `fail-closed` calls are refused. Part of a failed batch may be on
/// disk already, so a retried record can appear twice, and a retry starts with a newline
/// to end a line cut short: a record is written at least once.
fn write_loop(shared: &Shared, mut out: Box<dyn Write + Send>, path: &Path, metrics: &GateMetrics) {
    let mut failing = false;
    loop {
        let mut s = shared.lock();
        while s.lines.is_empty() && !s.closed {
            s = shared.wake.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if s.lines.is_empty() {
            // Closed and written.
            let _ = out.flush();
            s.done = true;
            drop(s);
            shared.wake.notify_all();
            return;
        }
        let closing = s.closed;
        drop(s);
        // Group commit: woken by the first record, the writer gives the others
        // GROUP_COMMIT to arrive, then writes and flushes them together. A wake-up and a
        // write per record cost the proxy ~25 µs of CPU per request (measured under load,
        // mostly context switches); readers see a record within ~2 ms.
        if !closing && !failing {
            std::thread::sleep(GROUP_COMMIT);
        }
        let batch = std::mem::take(&mut shared.lock().lines);
        let mut bytes = Vec::with_capacity(batch.iter().map(|l| l.len() + 1).sum::<usize>() + 1);
        if failing {
            bytes.push(b'\n');
        }
        for line in &batch {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        match (out.write_all(&bytes).and_then(|()| out.flush()), failing) {
            (Ok(()), true) => {
                failing = false;
                tracing::info!(path = %path.display(), "Audit log writes resumed");
            }
            (Ok(()), false) => {}
            (Err(e), _) => {
                if !failing {
                    tracing::error!(path = %path.display(), error = %e, records = batch.len(),
                        "Audit log write failed; the records are kept and written again every second");
                }
                failing = true;
                metrics.audit_write_failures.fetch_add(1, Relaxed);
                let mut s = shared.lock();
                // Back to the front, before what arrived meanwhile.
                let mut lines = batch;
                lines.append(&mut s.lines);
                s.lines = lines;
                drop(s);
                std::thread::sleep(RETRY);
            }
        }
    }
}

/// Now, as the audit log writes it.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Milliseconds since `since`, to the microsecond: the audit records' `duration_ms`.
pub(super) fn ms(since: std::time::Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Fails its first `fails` writes (after writing half of what it was given, as a full
    /// disk may), then writes everything into `out`.
    struct Flaky {
        fails: usize,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Flaky {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.fails > 0 {
                self.fails -= 1;
                self.out
                    .lock()
                    .unwrap()
                    .extend_from_slice(&b[..b.len() / 2]);
                return Err(io::Error::other("no space left on device"));
            }
            self.out.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn records_of_a_failed_write_are_kept_and_written_again() {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
            capacity: 16,
        });
        let out = Arc::new(Mutex::new(Vec::new()));
        let metrics = Arc::new(GateMetrics::new(vec![], vec![]));
        let writer = {
            let (shared, metrics) = (shared.clone(), metrics.clone());
            let flaky = Flaky {
                fails: 2,
                out: out.clone(),
            };
            std::thread::spawn(move || {
                write_loop(&shared, Box::new(flaky), Path::new("x"), &metrics)
            })
        };
        {
            let mut s = shared.lock();
            s.lines
                .extend(["{\"n\":1}".to_owned(), "{\"n\":2}".to_owned()]);
            s.closed = true;
        }
        shared.wake.notify_all();
        writer.join().unwrap();
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let whole: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with('{') && l.ends_with('}'))
            .collect();
        assert!(
            whole.contains(&"{\"n\":1}") && whole.contains(&"{\"n\":2}"),
            "{text:?}"
        );
        assert!(text.ends_with("{\"n\":1}\n{\"n\":2}\n"), "{text:?}");
        assert_eq!(metrics.audit_write_failures.load(Relaxed), 2);
        assert_eq!(metrics.audit_dropped.load(Relaxed), 0);
    }

    fn settings(path: &Path, queue: usize) -> AuditSettings {
        AuditSettings {
            path: path.to_owned(),
            include_bodies: false,
            include_tokens: false,
            fail_closed: false,
            queue,
        }
    }

    fn record(n: u16) -> Record {
        Record {
            status: n,
            ..Record::default()
        }
    }

    fn metrics() -> Arc<GateMetrics> {
        Arc::new(GateMetrics::new(vec![], vec![]))
    }

    #[test]
    fn the_file_is_created_0600_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(settings(&path, 16), metrics()).unwrap();
        log.close();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = AuditLog::open(settings(&link, 16), metrics()).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    #[test]
    fn close_writes_everything_queued_then_drops_later_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let m = metrics();
        let log = AuditLog::open(settings(&path, 10_000), m.clone()).unwrap();
        for i in 0..5000 {
            log.write(&record(i));
        }
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5000);
        log.write(&record(1));
        assert_eq!(m.audit_dropped.load(Relaxed), 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().lines().count(),
            5000
        );
    }

    #[test]
    fn reserved_places_are_never_given_to_other_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let m = metrics();
        let log = AuditLog::open(settings(&path, 2), m.clone()).unwrap();
        let mut held = log.reserve(2).expect("room for two");
        assert!(log.reserve(1).is_none(), "the queue is promised");
        log.write(&record(1));
        assert_eq!(
            m.audit_dropped.load(Relaxed),
            1,
            "an unreserved record took a place"
        );
        log.write_reserved(&record(2), &mut held);
        log.write_reserved(&record(3), &mut held);
        drop(held);
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert_eq!(m.audit_dropped.load(Relaxed), 1);
    }

    #[test]
    fn a_body_goes_in_as_json_not_as_a_string() {
        let line = line(&Record {
            body: Some(r#"{"jsonrpc":"2.0","id":1}"#.into()),
            ..Record::default()
        })
        .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["body"]["id"], 1);
        assert!(!line.contains('\n'));
    }
}
