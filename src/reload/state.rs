//! The last good copy of every remote list, in `state_dir`, so a start with
//! the list server down serves the policy the network last had.
//!
//! Per list: `NAME.list` (the bytes as downloaded), `NAME.list.minisig`
//! (its signature, when the list is signed: `minisign -V` works on the copy
//! by hand) and `NAME.list.meta` (JSON: the URL, the validators for the next
//! conditional request, when it was taken). Each file is written to a
//! temporary name, synced and renamed into place, so a crash leaves the old
//! copy or the new one, never half of one; the list is renamed last.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::ListSource;
use crate::lists::remote::Validators;
use crate::lists::source::{self, MAX_DOWNLOAD_BYTES};

/// A remote list's version as kept on disk.
#[derive(Debug)]
pub struct Copy {
    pub bytes: Vec<u8>,
    pub signature: Option<Vec<u8>>,
    pub validators: Validators,
    pub updated: SystemTime,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    url: String,
    #[serde(flatten)]
    validators: Validators,
    /// Seconds since the epoch.
    updated: u64,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// The copy of `source` in `state_dir`, if there is a readable one.
pub fn read_copy(source: &ListSource) -> Option<Copy> {
    let remote = source.remote.as_ref()?;
    let bytes = match source::read_regular_file(&source.path, MAX_DOWNLOAD_BYTES) {
        Ok(b) => b,
        Err(source::Unreadable::Io(_)) => return None,
        Err(e) => {
            tracing::error!(list = %source.name, path = %source.path.display(), error = %e, "copy in state_dir unusable");
            return None;
        }
    };
    let signature = std::fs::read(source.signature_path()).ok();
    let meta: Option<Meta> = std::fs::read(with_suffix(&source.path, ".meta"))
        .ok()
        .and_then(|m| serde_json::from_slice(&m).ok());
    let (validators, updated) = match meta {
        // Validators are only worth sending to the URL that gave them.
        Some(m) if m.url == remote.url => {
            (m.validators, UNIX_EPOCH + Duration::from_secs(m.updated))
        }
        Some(m) => (
            Validators::default(),
            UNIX_EPOCH + Duration::from_secs(m.updated),
        ),
        None => (
            Validators::default(),
            std::fs::metadata(&source.path)
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH),
        ),
    };
    Some(Copy {
        bytes,
        signature,
        validators,
        updated,
    })
}

/// Keeps `copy` as the last good version of `source`.
pub fn write_copy(source: &ListSource, copy: &Copy) -> std::io::Result<()> {
    let Some(remote) = &source.remote else {
        return Ok(());
    };
    if let Some(dir) = source.path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let meta = Meta {
        url: remote.url.clone(),
        validators: copy.validators.clone(),
        updated: copy
            .updated
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let meta = serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?;
    write_atomically(&with_suffix(&source.path, ".meta"), &meta)?;
    match &copy.signature {
        Some(sig) => write_atomically(&source.signature_path(), sig)?,
        None => match std::fs::remove_file(source.signature_path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        },
    }
    write_atomically(&source.path, &copy.bytes)
}

/// Temp file in the same directory, synced, renamed over `path`, and the
/// directory synced so the rename itself survives a power cut.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = with_suffix(path, &format!(".tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Remote;
    use crate::lists::FormatChoice;

    fn source(dir: &Path, url: &str) -> ListSource {
        ListSource {
            name: "r".into(),
            path: dir.join("state").join("r.list"),
            category: Some("c".into()),
            format: FormatChoice::Auto,
            remote: Some(Remote {
                url: url.into(),
                refresh: Duration::from_secs(3600),
            }),
            public_key: None,
        }
    }

    #[test]
    fn a_copy_round_trips_and_its_validators_stay_with_their_url() {
        let dir = tempfile::tempdir().unwrap();
        let s = source(dir.path(), "https://lists.example/a.txt");
        assert!(read_copy(&s).is_none());
        let copy = Copy {
            bytes: b"zoom.us\n".to_vec(),
            signature: Some(b"sig".to_vec()),
            validators: Validators {
                etag: Some("\"v1\"".into()),
                last_modified: None,
            },
            updated: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        write_copy(&s, &copy).unwrap();
        let back = read_copy(&s).unwrap();
        assert_eq!(back.bytes, copy.bytes);
        assert_eq!(back.signature, copy.signature);
        assert_eq!(back.validators, copy.validators);
        assert_eq!(back.updated, copy.updated);

        let moved = source(dir.path(), "https://lists.example/b.txt");
        assert_eq!(read_copy(&moved).unwrap().validators, Validators::default());

        // Unsigned now: the stale signature goes.
        write_copy(
            &s,
            &Copy {
                signature: None,
                ..copy
            },
        )
        .unwrap();
        assert_eq!(read_copy(&s).unwrap().signature, None);
        let leftovers = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
    }
}
