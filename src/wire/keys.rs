//! The pair key file and the key ring built from it.
//!
//! # File format
//!
//! The key file (`[pair] auth_key_file`, default `/etc/hapair/pair.key`) is text:
//!
//! ```text
//! # hapair pair key: keep it secret, keep it identical on both nodes.
//! 1 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08   # active: used to send
//! 0 60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752   # still accepted
//! ```
//!
//! - Each key line is `<id> <hex>`: `id` is a decimal number in `0..=255`, `hex` is the
//!   secret, at least 32 bytes (64 hex characters).
//! - `#` starts a comment (whole line or the rest of a line); blank lines are ignored.
//! - The **first** key line holds the *active* key: heartbeats are signed with it and carry
//!   its id. **Every** listed key is accepted on receive, so a key is rotated without a
//!   failover: add the new key as a second line on both nodes, reload both, move it to the
//!   first line on both, reload both, then delete the old line.
//! - A file whose only key line is a bare hex string (no id) holds key id 0.
//! - Ids must be unique. The file must not be readable by group or others (mode `0600`).
//!
//! `hapair keygen PATH` ([`keygen`]) writes a new file with one random 32-byte key, id 0.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The shortest accepted secret, in bytes (the HMAC-SHA256 output size).
pub const MIN_KEY_LEN: usize = 0x20;

/// Bytes of randomness written by [`keygen`].
const KEYGEN_LEN: usize = 0x20;

/// The name used in errors for keys that did not come from a file.
const NO_FILE: &str = "<keys>";

/// Secret key bytes. `Debug` prints `MASKED`, and the bytes are overwritten on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference to a byte of our buffer.
            // A volatile write keeps the compiler from eliding the wipe of a dying buffer.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// One pair key: its id on the wire and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub id: u8,
    pub secret: Secret,
}

/// The keys a node knows: the first is the active (sending) key, all are accepted on receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    /// Never empty: the constructors refuse an empty list.
    keys: Vec<Key>,
}

/// Why a key file (or key list) was refused. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: no such file; create one with `hapair keygen {}`", .path.display(), .path.display())]
    Missing { path: PathBuf },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: holds no key (only blank lines or comments); create one with `hapair keygen PATH`", .path.display())]
    Empty { path: PathBuf },
    #[error("{}: mode {mode:04o} gives group or others access to the pair key; run `chmod 600 {}`", .path.display(), .path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{}:{line}: expected `<id> <hex>` (or a single bare hex key), found {found} fields", .path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        found: usize,
    },
    #[error("{}:{line}: a bare hex key (without an id) is allowed only when it is the only key in the file; write `<id> <hex>`", .path.display())]
    BareKeyAmongOthers { path: PathBuf, line: usize },
    #[error("{}:{line}: bad key id {id:?}: expected a number in 0..=255", .path.display())]
    BadId {
        path: PathBuf,
        line: usize,
        id: String,
    },
    #[error("{}:{line}: bad hex: {detail}", .path.display())]
    BadHex {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("{}:{line}: key {id} is {len} bytes; at least {MIN_KEY_LEN} bytes ({} hex characters) are required", .path.display(), MIN_KEY_LEN * 2)]
    ShortKey {
        path: PathBuf,
        line: usize,
        id: u8,
        len: usize,
    },
    #[error("{}:{line}: key id {id} is listed twice (first on line {first})", .path.display())]
    DuplicateId {
        path: PathBuf,
        line: usize,
        id: u8,
        first: usize,
    },
    #[error("{}: already exists; refusing to overwrite a pair key (losing it breaks the pair)", .path.display())]
    Exists { path: PathBuf },
}

impl KeyRing {
    /// Reads and checks a key file (see the module documentation for the format).
    pub fn load(path: impl AsRef<Path>) -> Result<KeyRing, KeyError> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => KeyError::Missing {
                path: path.to_owned(),
            },
            _ => KeyError::Io {
                path: path.to_owned(),
                source: e,
            },
        })?;
        // fstat the open file, not the path: what we check is what we read.
        let meta = file.metadata().map_err(|e| io_error(path, e))?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| io_error(path, e))?;
        KeyRing::parse(&text, path)
    }

    /// Parses key file text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<KeyRing, KeyError> {
        // (line number, id if given, hex)
        let mut entries: Vec<(usize, Option<&str>, &str)> = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let content = match raw.find('#') {
                Some(at) => &raw[..at],
                None => raw,
            };
            let fields: Vec<&str> = content.split_whitespace().collect();
            match fields.as_slice() {
                [] => continue,
                [hex] => entries.push((line, None, hex)),
                [id, hex] => entries.push((line, Some(id), hex)),
                _ => {
                    return Err(KeyError::Syntax {
                        path: path.to_owned(),
                        line,
                        found: fields.len(),
                    })
                }
            }
        }
        if entries.is_empty() {
            return Err(KeyError::Empty {
                path: path.to_owned(),
            });
        }
        let several = entries.len() > 1;
        let mut keys = Vec::with_capacity(entries.len());
        let mut lines = Vec::with_capacity(entries.len());
        for (line, id, hex) in entries {
            let id = match id {
                Some(id) => id.parse::<u8>().map_err(|_| KeyError::BadId {
                    path: path.to_owned(),
                    line,
                    id: id.to_owned(),
                })?,
                None if several => {
                    return Err(KeyError::BareKeyAmongOthers {
                        path: path.to_owned(),
                        line,
                    })
                }
                None => 0,
            };
            let bytes = hex::decode(hex).map_err(|e| KeyError::BadHex {
                path: path.to_owned(),
                line,
                detail: e.to_string(),
            })?;
            keys.push((id, bytes));
            lines.push(line);
        }
        KeyRing::build(keys, path, &lines)
    }

    /// Builds a ring from `(id, secret)` pairs; the first is the active key. For tests and
    /// for callers that hold keys in memory. Applies the same checks as a key file.
    pub fn from_keys<I>(keys: I) -> Result<KeyRing, KeyError>
    where
        I: IntoIterator<Item = (u8, Vec<u8>)>,
    {
        let keys: Vec<(u8, Vec<u8>)> = keys.into_iter().collect();
        let lines: Vec<usize> = (1..=keys.len()).collect();
        KeyRing::build(keys, Path::new(NO_FILE), &lines)
    }

    fn build(keys: Vec<(u8, Vec<u8>)>, path: &Path, lines: &[usize]) -> Result<KeyRing, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty {
                path: path.to_owned(),
            });
        }
        let mut ring: Vec<Key> = Vec::with_capacity(keys.len());
        for (i, (id, bytes)) in keys.into_iter().enumerate() {
            let line = lines.get(i).copied().unwrap_or(i + 1);
            let secret = Secret::new(bytes);
            if secret.expose().len() < MIN_KEY_LEN {
                return Err(KeyError::ShortKey {
                    path: path.to_owned(),
                    line,
                    id,
                    len: secret.expose().len(),
                });
            }
            if let Some(first) = ring.iter().position(|k| k.id == id) {
                return Err(KeyError::DuplicateId {
                    path: path.to_owned(),
                    line,
                    id,
                    first: lines.get(first).copied().unwrap_or(first + 1),
                });
            }
            ring.push(Key { id, secret });
        }
        Ok(KeyRing { keys: ring })
    }

    /// The key heartbeats are signed with.
    pub fn active(&self) -> &Key {
        // `keys` is never empty: `build` refuses an empty list.
        &self.keys[0]
    }

    /// The accepted key with this id, if any.
    pub fn get(&self, id: u8) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// All accepted key ids, the active one first (for logs and status).
    pub fn ids(&self) -> impl Iterator<Item = u8> + '_ {
        self.keys.iter().map(|k| k.id)
    }
}

fn io_error(path: &Path, source: io::Error) -> KeyError {
    KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a new key file at `path` with one random 32-byte key, id 0, mode 0600.
///
/// The file is created with mode 0600 (never readable by others, not even briefly) and
/// an existing file is never overwritten: losing the key breaks the pair.
pub fn keygen(path: impl AsRef<Path>) -> Result<(), KeyError> {
    let path = path.as_ref();
    let mut secret = Secret::new(vec![0u8; KEYGEN_LEN]);
    getrandom::getrandom(&mut secret.0)
        .map_err(|e| io_error(path, io::Error::other(e.to_string())))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_owned(),
            },
            _ => io_error(path, e),
        })?;
    let text = format!(
        "# hapair pair key: copy this file to both nodes (mode 0600).\n\
         # Format: `<id> <hex>` per line; the first line is the active (sending) key,\n\
         # every line is accepted on receive. See docs/protocol.md for key rotation.\n\
         0 {}\n",
        hex::encode(secret.expose())
    );
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const K2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn write_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn parse(text: &str) -> Result<KeyRing, KeyError> {
        KeyRing::parse(text, Path::new("/etc/hapair/pair.key"))
    }

    #[test]
    fn keygen_writes_mode_0600_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pair.key");
        keygen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ring = KeyRing::load(&path).unwrap();
        assert_eq!(ring.active().id, 0);
        assert_eq!(ring.active().secret.expose().len(), KEYGEN_LEN);
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn keygen_makes_different_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        keygen(&a).unwrap();
        keygen(&b).unwrap();
        assert_ne!(KeyRing::load(&a).unwrap(), KeyRing::load(&b).unwrap());
    }

    #[test]
    fn keygen_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "pair.key", &format!("0 {K1}\n"), 0o600);
        let err = keygen(&path).unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err:?}");
        assert!(err.to_string().contains("refusing to overwrite"));
        // The old key is intact.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("0 {K1}\n"));
    }

    #[test]
    fn load_rejects_group_or_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "pair.key", &format!("0 {K1}\n"), 0o644);
        let err = KeyRing::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Permissions { mode: 0o644, .. }));
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
        for mode in [0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(matches!(
                KeyRing::load(&path),
                Err(KeyError::Permissions { .. })
            ));
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(KeyRing::load(&path).is_ok());
    }

    #[test]
    fn load_missing_file_says_keygen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.key");
        let err = KeyRing::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Missing { .. }));
        let msg = err.to_string();
        assert!(msg.contains("no such file"), "{msg}");
        assert!(msg.contains(&format!("hapair keygen {}", path.display())));
    }

    #[test]
    fn first_key_is_active_and_all_are_accepted() {
        let ring = parse(&format!(
            "# comment\n\n  2 {K2}   # new key\n1 {}\n",
            K1.to_uppercase()
        ))
        .unwrap();
        assert_eq!(ring.active().id, 2);
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(ring.get(1).unwrap().secret.expose(), &[0x11; 32][..]);
        assert!(ring.get(3).is_none());
    }

    #[test]
    fn bare_hex_line_is_key_zero() {
        let ring = parse(&format!("# only key\n{K1}\n")).unwrap();
        assert_eq!(ring.active().id, 0);
        let err = parse(&format!("{K1}\n1 {K2}\n")).unwrap_err();
        assert!(matches!(err, KeyError::BareKeyAmongOthers { line: 1, .. }));
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let err = parse("\n# nothing\n").unwrap_err();
        assert!(matches!(err, KeyError::Empty { .. }));
        assert!(err.to_string().starts_with("/etc/hapair/pair.key: "));

        let err = parse(&format!("0 {K1}\n1 zz{}\n", &K2[2..])).unwrap_err();
        assert!(matches!(err, KeyError::BadHex { line: 2, .. }), "{err:?}");
        assert!(err
            .to_string()
            .starts_with("/etc/hapair/pair.key:2: bad hex"));

        let err = parse(&format!("0 {K1}\n1 {}\n", &K2[1..])).unwrap_err();
        assert!(
            matches!(err, KeyError::BadHex { line: 2, .. }),
            "odd length"
        );

        let err = parse(&format!("0 {}\n", &K1[..62])).unwrap_err();
        assert!(matches!(
            err,
            KeyError::ShortKey {
                line: 1,
                len: 31,
                ..
            }
        ));
        assert!(err.to_string().contains("at least 32 bytes"));

        let err = parse(&format!("0 {K1}\n\n0 {K2}\n")).unwrap_err();
        assert!(matches!(
            err,
            KeyError::DuplicateId {
                line: 3,
                id: 0,
                first: 1,
                ..
            }
        ));

        let err = parse(&format!("256 {K1}\n")).unwrap_err();
        assert!(matches!(err, KeyError::BadId { line: 1, .. }));
        let err = parse(&format!("-1 {K1}\n")).unwrap_err();
        assert!(matches!(err, KeyError::BadId { .. }));

        let err = parse(&format!("0 {K1} extra\n")).unwrap_err();
        assert!(matches!(err, KeyError::Syntax { found: 3, .. }));
    }

    #[test]
    fn longer_keys_are_accepted() {
        let ring = parse(&format!("7 {K1}{K2}\n")).unwrap();
        assert_eq!(ring.active().secret.expose().len(), 64);
    }

    #[test]
    fn debug_masks_secrets() {
        let ring = KeyRing::from_keys([(3, vec![0xab; 32])]).unwrap();
        let dbg = format!("{ring:?}");
        assert!(dbg.contains("MASKED"), "{dbg}");
        assert!(
            !dbg.contains("171") && !dbg.to_lowercase().contains("abab"),
            "{dbg}"
        );
    }

    #[test]
    fn from_keys_checks_like_a_file() {
        assert!(matches!(
            KeyRing::from_keys(Vec::new()),
            Err(KeyError::Empty { .. })
        ));
        assert!(matches!(
            KeyRing::from_keys([(0, vec![1; 31])]),
            Err(KeyError::ShortKey { .. })
        ));
        assert!(matches!(
            KeyRing::from_keys([(0, vec![1; 32]), (0, vec![2; 32])]),
            Err(KeyError::DuplicateId { .. })
        ));
    }
}
