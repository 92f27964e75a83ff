//! Session-ticket keys shared by a fleet (`ticket-keys = "FILE"`): every replica that reads
//! the same file encrypts tickets under its first key and decrypts under any, so a client
//! that lands on another replica resumes instead of paying a full PQ handshake.
//!
//! rustls's own `Ticketer` makes its keys in memory and rotates them itself, which no second
//! process can share; this is a [`ProducesTickets`] over keys from a file instead (an
//! operator's, or `mcp-pqtls ticket-keys rotate FILE`'s), sealed with aws-lc-rs's
//! AES-256-GCM. The file format is ours (one key a line: a 16-byte name and a 32-byte key,
//! hex), small enough that no crate is worth it.
//!
//! A ticket is `name (16) || nonce (12) || ciphertext || tag (16)`. Its additional data is the
//! key name and the negotiation's context (a digest of the groups and policy it was made
//! under), so that a ticket made under one policy never resumes under another, on any
//! replica, as a reload of the policy on one box already guarantees there.
//!
//! Key material is never logged (`Debug` shows names only). The file must be private (see
//! `crate::secret_file`: 0600, or group-readable under the sidecar's own group, as a
//! Kubernetes Secret with `fsGroup` is), or it is refused. Reloaded like the certificate; a
//! reload that fails keeps the keys in use.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use rustls::server::ProducesTickets;

/// How long a ticket may be used, in seconds: rustls's own ticketer's 6 hours.
pub const TICKET_LIFETIME_SECS: u32 = 6 * 60 * 60;

/// The keys `ticket-keys rotate` keeps by default: the new one, and two that still decrypt
/// tickets issued before it (a replica that has not reloaded yet, a client back after hours).
pub const DEFAULT_KEEP: usize = 3;

/// Keys a file may hold at most.
const MAX_KEYS: usize = 16;

const NAME_LEN: usize = 16;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// Why a ticket-key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TicketKeyError {
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Others (or a group other than this process's own) may read or write it.
    #[error("{path}: mode {mode:o} lets others read the ticket keys (anyone with them can decrypt recorded sessions' resumption secrets): chmod 600 it")]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line is not `NAME KEY` in hex.
    #[error("{path}:{line}: expected `NAME KEY`, 32 and 64 hex digits (make the file with `mcp-pqtls ticket-keys rotate {path}`)")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line number.
        line: usize,
    },
    /// Two keys share a name.
    #[error("{path}:{line}: key name {name} is used twice")]
    DuplicateName {
        /// The file.
        path: PathBuf,
        /// The line number.
        line: usize,
        /// The name.
        name: String,
    },
    /// No key, or more than the file may hold.
    #[error("{path}: {found} keys; a ticket-key file holds 1 to {MAX_KEYS}")]
    Count {
        /// The file.
        path: PathBuf,
        /// How many it has.
        found: usize,
    },
    /// The system RNG failed.
    #[error("the system's random number generator failed")]
    Random,
}

/// One key, by name.
struct TicketKey {
    name: [u8; NAME_LEN],
    key: LessSafeKey,
}

/// The keys of a ticket-key file, reloadable: the first encrypts, all decrypt.
pub struct TicketKeys {
    path: PathBuf,
    keys: ArcSwap<Vec<TicketKey>>,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKeys")
            .field("path", &self.path)
            .field("names", &self.names())
            .finish()
    }
}

impl TicketKeys {
    /// Reads `path` (it must be private: 0600, or 0440 under this process's own group).
    pub fn load(path: &Path) -> Result<Arc<Self>, TicketKeyError> {
        Ok(Arc::new(Self {
            path: path.to_owned(),
            keys: ArcSwap::from_pointee(read(path)?),
        }))
    }

    /// Reads the file again; on error the keys in use stay.
    pub fn reload(&self) -> Result<(), TicketKeyError> {
        self.keys.store(Arc::new(read(&self.path)?));
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key names, hex, the encrypting one first (what logs may show).
    pub fn names(&self) -> Vec<String> {
        self.keys.load().iter().map(|k| hex(&k.name)).collect()
    }

    /// A ticketer over these keys whose tickets only open under the same `context`.
    pub(crate) fn bound(self: &Arc<Self>, context: Vec<u8>) -> Arc<dyn ProducesTickets> {
        Arc::new(Bound {
            keys: self.clone(),
            context,
        })
    }
}

/// [`TicketKeys`] bound to one negotiation's context.
struct Bound {
    keys: Arc<TicketKeys>,
    context: Vec<u8>,
}

impl fmt::Debug for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bound").field("keys", &self.keys).finish()
    }
}

impl Bound {
    fn aad(&self, name: &[u8]) -> Vec<u8> {
        [name, &self.context].concat()
    }
}

impl ProducesTickets for Bound {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.keys.load();
        let key = keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut sealed = plain.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(&key.name)),
                &mut sealed,
            )
            .ok()?;
        Some([&key.name[..], &nonce[..], &sealed].concat())
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < NAME_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let keys = self.keys.keys.load();
        // A retired key's name is no longer in the file: its tickets do not open.
        let key = keys.iter().find(|k| k.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(self.aad(name)), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TicketKeyError + '_ {
    move |source| TicketKeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A key as the file holds it: its name and its bytes.
type RawKey = ([u8; NAME_LEN], [u8; KEY_LEN]);

/// The keys of `path`, in file order.
fn parse(path: &Path, text: &str) -> Result<Vec<RawKey>, TicketKeyError> {
    let mut keys: Vec<RawKey> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = || TicketKeyError::Syntax {
            path: path.to_owned(),
            line: i + 1,
        };
        let mut fields = line.split_whitespace();
        let (Some(name), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(syntax());
        };
        let (Some(name), Some(key)) = (unhex::<NAME_LEN>(name), unhex::<KEY_LEN>(key)) else {
            return Err(syntax());
        };
        if keys.iter().any(|(n, _)| *n == name) {
            return Err(TicketKeyError::DuplicateName {
                path: path.to_owned(),
                line: i + 1,
                name: hex(&name),
            });
        }
        keys.push((name, key));
    }
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(TicketKeyError::Count {
            path: path.to_owned(),
            found: keys.len(),
        });
    }
    Ok(keys)
}

fn private(path: &Path) -> Result<(), TicketKeyError> {
    match crate::secret_file::exposed_mode(path).map_err(io(path))? {
        Some(mode) => Err(TicketKeyError::NotPrivate {
            path: path.to_owned(),
            mode,
        }),
        None => Ok(()),
    }
}

fn read(path: &Path) -> Result<Vec<TicketKey>, TicketKeyError> {
    private(path)?;
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    parse(path, &text)?
        .into_iter()
        .map(|(name, key)| {
            // 32 bytes always make an AES-256 key.
            let key = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| TicketKeyError::Random)?;
            Ok(TicketKey {
                name,
                key: LessSafeKey::new(key),
            })
        })
        .collect()
}

/// What [`rotate`] did: the new key's name, and how many keys the file holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rotated {
    /// The new key's name, hex.
    pub new_name: String,
    /// The names the file holds, the new (encrypting) one first.
    pub names: Vec<String>,
    /// The names dropped (their tickets no longer resume).
    pub retired: Vec<String>,
}

/// Puts a new random key first in `path` (created if missing, 0600), keeping at most `keep`
/// keys: the older ones are retired. Written to a private temporary file beside it, synced
/// and renamed over it, so that a replica reloading it never reads half a file.
pub fn rotate(path: &Path, keep: usize) -> Result<Rotated, TicketKeyError> {
    let keep = keep.clamp(1, MAX_KEYS);
    let mut keys = match std::fs::read_to_string(path) {
        Ok(text) => {
            private(path)?;
            parse(path, &text)?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(path)(e)),
    };
    // The new file keeps the old one's owner, group and mode (a root-run rotation of a
    // `root:mcp-pqtls 0440` file must stay readable by the sidecar).
    #[cfg(unix)]
    let kept = std::fs::metadata(path).ok();
    let mut name = [0u8; NAME_LEN];
    let mut key = [0u8; KEY_LEN];
    aws_lc_rs::rand::fill(&mut name).map_err(|_| TicketKeyError::Random)?;
    aws_lc_rs::rand::fill(&mut key).map_err(|_| TicketKeyError::Random)?;
    keys.insert(0, (name, key));
    let retired: Vec<String> = keys
        .split_off(keep.min(keys.len()))
        .iter()
        .map(|(n, _)| hex(n))
        .collect();
    let mut text = String::from(
        "# mcp-pqtls session-ticket keys: NAME KEY (hex). The first encrypts, all decrypt.\n# Made by `mcp-pqtls ticket-keys rotate`; keep it 0600.\n",
    );
    for (n, k) in &keys {
        text.push_str(&format!("{} {}\n", hex(n), hex(k)));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut suffix = [0u8; 8];
    aws_lc_rs::rand::fill(&mut suffix).map_err(|_| TicketKeyError::Random)?;
    let tmp = dir.join(format!(".ticket-keys.{}", hex(&suffix)));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        #[cfg(unix)]
        if let Some(old) = &kept {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid()))?;
            f.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o777))?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(Rotated {
        new_name: hex(&name),
        names: keys.iter().map(|(n, _)| hex(n)).collect(),
        retired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_under_any_key_of_the_file_and_its_context_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let first = rotate(&path, 3).unwrap();
        let keys = TicketKeys::load(&path).unwrap();
        let a = keys.bound(b"policy A".to_vec());
        let ticket = a.encrypt(b"session").unwrap();
        assert_eq!(
            &ticket[..NAME_LEN],
            &unhex::<NAME_LEN>(&first.new_name).unwrap()
        );
        assert_eq!(a.decrypt(&ticket).unwrap(), b"session");
        // Another policy's ticketer, same keys: not its ticket.
        assert!(keys.bound(b"policy B".to_vec()).decrypt(&ticket).is_none());
        // A second process reading the same file opens it.
        let other = TicketKeys::load(&path).unwrap().bound(b"policy A".to_vec());
        assert_eq!(other.decrypt(&ticket).unwrap(), b"session");
        // Rotated: the new key encrypts, the old one still decrypts.
        let second = rotate(&path, 2).unwrap();
        keys.reload().unwrap();
        assert_eq!(
            keys.names(),
            vec![second.new_name.clone(), first.new_name.clone()]
        );
        assert_eq!(a.decrypt(&ticket).unwrap(), b"session");
        assert_eq!(
            &a.encrypt(b"x").unwrap()[..NAME_LEN],
            &unhex::<NAME_LEN>(&second.new_name).unwrap()
        );
        // Rotated out: the first key's tickets no longer open.
        let third = rotate(&path, 2).unwrap();
        assert_eq!(third.retired, vec![first.new_name]);
        keys.reload().unwrap();
        assert!(a.decrypt(&ticket).is_none());
        // A tampered or short ticket is refused.
        let mut t = a.encrypt(b"x").unwrap();
        *t.last_mut().unwrap() ^= 1;
        assert!(a.decrypt(&t).is_none());
        assert!(a.decrypt(&t[..20]).is_none());
    }

    #[test]
    fn files_others_can_read_or_that_do_not_parse_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        rotate(&path, 1).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = TicketKeys::load(&path).unwrap_err().to_string();
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        // 0440 under this process's own group (a Secret mounted with fsGroup): private.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        TicketKeys::load(&path).unwrap();
        // A rotation keeps the file's mode (and owner and group).
        rotate(&path, 2).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o440, "{mode:o}");
        assert_eq!(TicketKeys::load(&path).unwrap().names().len(), 2);
        // Group-writable is not.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o460)).unwrap();
        assert!(TicketKeys::load(&path).is_err());
        for (text, expected) in [
            ("", "0 keys"),
            ("00 11\n", ":1: expected `NAME KEY`"),
            (
                &format!(
                    "{} {}\n{} {}\n",
                    "0".repeat(32),
                    "1".repeat(64),
                    "0".repeat(32),
                    "2".repeat(64)
                ),
                ":2: key name",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let e = TicketKeys::load(&path).unwrap_err().to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }

    #[test]
    fn debug_never_shows_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        rotate(&path, 1).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let key = text
            .lines()
            .last()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .to_owned();
        let keys = TicketKeys::load(&path).unwrap();
        let shown = format!("{keys:?} {:?}", keys.bound(vec![]));
        assert!(!shown.contains(&key), "{shown}");
    }
}
