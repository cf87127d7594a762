//! Reading a list's bytes safely, and deciding whether they are a list at
//! all before a parser sees them.
//!
//! Two promises live here. Reading never blocks: a list path replaced by a
//! FIFO would otherwise wedge `open(2)` until a writer came, and every later
//! reload (and shutdown) with it, so the file is opened non-blocking and
//! must be a regular file. And bytes that are plainly not a list (an HTML
//! error page, a binary, a file over the size cap) are refused as a whole,
//! with what they are, rather than parsed into a list of junk lines that
//! would empty the policy.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Downloads larger than this are refused (SPEC: 64 MiB).
pub const MAX_DOWNLOAD_BYTES: u64 = 64 << 20;
/// Local files larger than this are refused: four times a download's cap,
/// room for a padded million-name RPZ zone, and still a bound.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Why a list's bytes cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// The operating system's reason (missing, permission denied…).
    Io(String),
    /// Not a regular file: what it is instead.
    NotRegular(&'static str),
    TooBig {
        limit: u64,
    },
    /// A NUL byte (or mostly undecodable text) at this line.
    Binary {
        line: u32,
    },
    /// An HTML page (a web server's error or login page), not a list.
    Html,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreadable::Io(why) => write!(f, "cannot read: {why}"),
            Unreadable::NotRegular(what) => {
                write!(
                    f,
                    "is {what}, not a regular file; lists are read from regular files only"
                )
            }
            Unreadable::TooBig { limit } => {
                write!(f, "is larger than {} MiB; refused", limit >> 20)
            }
            Unreadable::Binary { .. } => {
                f.write_str("is a binary file (it holds NUL or non-text bytes), not a list")
            }
            Unreadable::Html => {
                f.write_str("is an HTML page (a web server's error or login page?), not a list")
            }
        }
    }
}

impl Unreadable {
    /// The line a report should point at, for problems that have one.
    pub fn line(&self) -> Option<u32> {
        match self {
            Unreadable::Binary { line } => Some(*line),
            Unreadable::Html => Some(1),
            _ => None,
        }
    }
}

/// Reads a regular file of at most `cap` bytes without ever blocking on
/// open: FIFOs, devices, sockets and directories are refused by type.
pub fn read_regular_file(path: &Path, cap: u64) -> Result<Vec<u8>, Unreadable> {
    let io = |e: std::io::Error| Unreadable::Io(io_reason(&e));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(Unreadable::NotRegular(if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "a special file"
        }));
    }
    if meta.len() > cap {
        return Err(Unreadable::TooBig { limit: cap });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow while it is read: never take more than the cap.
    file.take(cap + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > cap {
        return Err(Unreadable::TooBig { limit: cap });
    }
    Ok(bytes)
}

/// The OS error without Rust's "(os error 2)" suffix.
pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// A list's text, ready for a parser: the UTF-8 byte-order mark removed,
/// and each line that is not valid UTF-8 blanked and reported by number.
pub struct Text<'a> {
    pub text: std::borrow::Cow<'a, str>,
    /// 1-based numbers of lines that were not UTF-8 (blanked in `text`).
    pub not_utf8: Vec<u32>,
}

/// Checks that `bytes` look like a list (text, not HTML) and decodes them.
/// `content_type` is the download's `Content-Type`, when there was one.
pub fn decode<'a>(bytes: &'a [u8], content_type: Option<&str>) -> Result<Text<'a>, Unreadable> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html"))
    }) || starts_like_html(bytes)
    {
        return Err(Unreadable::Html);
    }
    if let Some(at) = memchr_nul(bytes) {
        return Err(Unreadable::Binary {
            line: line_of(bytes, at),
        });
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Text {
            text: text.into(),
            not_utf8: Vec::new(),
        }),
        Err(_) => decode_lines(bytes),
    }
}

/// The slow path: some line is not UTF-8. Such lines are blanked (kept as
/// lines, so numbering holds) and listed; if most of the file is not text,
/// the file is binary.
fn decode_lines(bytes: &[u8]) -> Result<Text<'static>, Unreadable> {
    let mut text = String::with_capacity(bytes.len());
    let mut not_utf8 = Vec::new();
    let mut bad_bytes = 0usize;
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            text.push('\n');
        }
        match std::str::from_utf8(line) {
            Ok(l) => text.push_str(l),
            Err(_) => {
                not_utf8.push(u32::try_from(i + 1).unwrap_or(u32::MAX));
                bad_bytes += line.len();
            }
        }
    }
    if bad_bytes * 2 > bytes.len() {
        return Err(Unreadable::Binary {
            line: not_utf8.first().copied().unwrap_or(1),
        });
    }
    Ok(Text {
        text: text.into(),
        not_utf8,
    })
}

fn starts_like_html(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let head = &bytes[start..bytes.len().min(start + 14)];
    let lower: Vec<u8> = head.iter().map(u8::to_ascii_lowercase).collect();
    lower.starts_with(b"<!doctype html") || lower.starts_with(b"<html")
}

fn memchr_nul(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == 0)
}

fn line_of(bytes: &[u8], at: usize) -> u32 {
    let newlines = bytes[..at].iter().filter(|b| **b == b'\n').count();
    u32::try_from(newlines + 1).unwrap_or(u32::MAX)
}

/// Text as a message may show it: control characters (an `ESC` that would
/// drive the operator's terminal, a `BEL`) as `\x1b`-style escapes.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                if (c as u32) < 0x100 {
                    write!(f, "\\x{:02x}", c as u32)?;
                } else {
                    write!(f, "\\u{{{:x}}}", c as u32)?;
                }
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_refused_by_type_or_by_its_first_bytes() {
        assert_eq!(
            decode(b"zoom.us\n", Some("text/html; charset=utf-8")).err(),
            Some(Unreadable::Html)
        );
        assert_eq!(
            decode(b"\n  <!DOCTYPE HTML><title>404</title>", None).err(),
            Some(Unreadable::Html)
        );
        assert_eq!(decode(b"<HtMl>", None).err(), Some(Unreadable::Html));
        assert!(decode(b"zoom.us\n", Some("text/plain")).is_ok());
    }

    #[test]
    fn binary_is_refused_with_its_line() {
        assert_eq!(
            decode(b"a.example\nb.example\n\x00\x01", None).err(),
            Some(Unreadable::Binary { line: 3 })
        );
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i * 7919 % 251) as u8 | 0x80)
            .collect();
        assert!(matches!(
            decode(&noise, None),
            Err(Unreadable::Binary { .. })
        ));
    }

    #[test]
    fn bom_is_dropped_and_bad_lines_are_located() {
        let t = decode(b"\xEF\xBB\xBFzoom.us\n", None).unwrap();
        assert_eq!(t.text, "zoom.us\n");
        let t = decode(b"a.example\nb\xffad.example\nc.example\n", None).unwrap();
        assert_eq!(t.text, "a.example\n\nc.example\n");
        assert_eq!(t.not_utf8, [2]);
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            read_regular_file(&fifo, MAX_FILE_BYTES).err(),
            Some(Unreadable::NotRegular("a FIFO (named pipe)"))
        );
        assert_eq!(
            read_regular_file(Path::new("/dev/zero"), MAX_FILE_BYTES).err(),
            Some(Unreadable::NotRegular("a device"))
        );
        assert_eq!(
            read_regular_file(dir.path(), MAX_FILE_BYTES).err(),
            Some(Unreadable::NotRegular("a directory"))
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 100]).unwrap();
        assert_eq!(
            read_regular_file(&big, 99).err(),
            Some(Unreadable::TooBig { limit: 99 })
        );
        assert_eq!(read_regular_file(&big, 100).unwrap().len(), 100);
        assert_eq!(
            read_regular_file(&dir.path().join("none"), 100).err(),
            Some(Unreadable::Io("No such file or directory".into()))
        );
    }

    #[test]
    fn escaped_shows_controls() {
        assert_eq!(
            Escaped("a\u{1b}]0;x\u{7}b\u{9b}").to_string(),
            "a\\x1b]0;x\\x07b\\x9b"
        );
    }
}
