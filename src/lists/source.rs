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

/// Opens a regular file of at most `cap` bytes without ever blocking on
/// open: FIFOs, devices, sockets and directories are refused by type.
/// Returns the file and what `fstat` said of it.
pub fn open_regular(path: &Path, cap: u64) -> Result<(std::fs::File, Stamp), Unreadable> {
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
    Ok((file, Stamp::of(&meta)))
}

/// Reads a whole regular file of at most `cap` bytes ([`open_regular`]).
pub fn read_regular_file(path: &Path, cap: u64) -> Result<Vec<u8>, Unreadable> {
    let (file, stamp) = open_regular(path, cap)?;
    let mut bytes = Vec::with_capacity(stamp.len as usize);
    // The file may grow while it is read: never take more than the cap.
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Unreadable::Io(io_reason(&e)))?;
    if bytes.len() as u64 > cap {
        return Err(Unreadable::TooBig { limit: cap });
    }
    Ok(bytes)
}

/// What `stat` says of a file, enough to tell that it has not been touched
/// since: a rename over it changes the inode, a write in place the
/// modification and change times, a truncation the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    pub len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The stamp of the file at `path` now (following symlinks, as a read
    /// would), if it can be had.
    pub fn now(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self::of(&m))
    }
}

/// A regular file read a chunk of whole lines at a time, so a list of a
/// million lines is never held whole: a chunk is parsed and dropped, and a
/// reload's memory is the parsed list, not the parsed list plus its text.
pub struct LineChunks {
    file: std::fs::File,
    buf: Vec<u8>,
    /// `buf[start..end]` was read but not yet handed out (a line's start).
    start: usize,
    end: usize,
    read: u64,
    cap: u64,
}

/// Bytes asked of the kernel at a time; a line longer than this grows the
/// buffer (within the file's cap).
const CHUNK: usize = 1 << 20;

impl LineChunks {
    pub fn new(file: std::fs::File, cap: u64) -> Self {
        Self::with_chunk(file, cap, CHUNK)
    }

    /// As [`LineChunks::new`], reading `chunk` bytes at a time (tests cut
    /// small chunks to cross every boundary).
    pub fn with_chunk(file: std::fs::File, cap: u64, chunk: usize) -> Self {
        Self {
            file,
            buf: vec![0; chunk.max(1)],
            start: 0,
            end: 0,
            read: 0,
            cap,
        }
    }

    /// The next chunk: whole lines, ending in `\n` unless it is the file's
    /// last. `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<&[u8]>, Unreadable> {
        loop {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = loop {
                match self.file.read(&mut self.buf[self.end..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Unreadable::Io(io_reason(&e))),
                }
            };
            self.read += n as u64;
            // The file may grow while it is read: never take more than the cap.
            if self.read > self.cap {
                return Err(Unreadable::TooBig { limit: self.cap });
            }
            let cut = if n == 0 {
                if self.end == 0 {
                    return Ok(None);
                }
                self.end
            } else {
                self.end += n;
                match memchr::memrchr(b'\n', &self.buf[..self.end]) {
                    Some(i) => i + 1,
                    None => continue,
                }
            };
            self.start = cut;
            return Ok(Some(&self.buf[..cut]));
        }
    }
}

/// A digest of a list's bytes, the same however they are cut into chunks:
/// equal bytes, equal digest; a reload that finds the same digest changes
/// nothing.
#[derive(Default)]
pub struct Digest(std::hash::DefaultHasher);

impl Digest {
    pub fn update(&mut self, bytes: &[u8]) {
        // SipHash keeps a partial word between calls, so chunk boundaries
        // do not change the result (`write_usize`-style length suffixes
        // would).
        std::hash::Hasher::write(&mut self.0, bytes);
    }

    pub fn finish(&self) -> u64 {
        std::hash::Hasher::finish(&self.0)
    }

    pub fn of(bytes: &[u8]) -> u64 {
        let mut d = Self::default();
        d.update(bytes);
        d.finish()
    }
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
    let mut decoder = Decoder::new(content_type);
    let text = decoder.feed(bytes)?;
    let not_utf8 = decoder.finish()?;
    Ok(Text { text, not_utf8 })
}

/// [`decode`] a chunk of whole lines at a time ([`LineChunks`]): the first
/// chunk is where a BOM or an HTML page shows; NULs and lines that are not
/// UTF-8 are located by their line in the whole list.
pub struct Decoder {
    html_type: bool,
    /// No chunk yet (a BOM is looked for).
    first: bool,
    /// Some byte that is not blank has been seen (an HTML page would have
    /// shown by then).
    head_seen: bool,
    /// Lines in the chunks before this one.
    lines: u32,
    bytes: usize,
    bad_bytes: usize,
    not_utf8: Vec<u32>,
}

impl Decoder {
    pub fn new(content_type: Option<&str>) -> Self {
        let html_type = content_type.is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html"))
        });
        Self {
            html_type,
            first: true,
            head_seen: false,
            lines: 0,
            bytes: 0,
            bad_bytes: 0,
            not_utf8: Vec::new(),
        }
    }

    /// Lines in the chunks fed so far.
    pub fn lines(&self) -> u32 {
        self.lines
    }

    /// The text of `chunk` (whole lines), lines that are not UTF-8 blanked.
    pub fn feed<'a>(&mut self, chunk: &'a [u8]) -> Result<std::borrow::Cow<'a, str>, Unreadable> {
        let chunk = if !self.head_seen {
            // The head: a BOM at the very start; an HTML page shows at the
            // first bytes that are not blank, which may be a chunk or two
            // later (chunks are whole lines, so a tag is never cut).
            let chunk = if std::mem::take(&mut self.first) {
                chunk.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(chunk)
            } else {
                chunk
            };
            if self.html_type || starts_like_html(chunk) {
                return Err(Unreadable::Html);
            }
            self.head_seen = !chunk.iter().all(u8::is_ascii_whitespace);
            chunk
        } else {
            chunk
        };
        if let Some(at) = memchr_nul(chunk) {
            return Err(Unreadable::Binary {
                line: self.lines.saturating_add(line_of(chunk, at)),
            });
        }
        self.bytes += chunk.len();
        let text = match std::str::from_utf8(chunk) {
            Ok(text) => text.into(),
            Err(_) => self.decode_lines(chunk).into(),
        };
        let newlines = memchr::memchr_iter(b'\n', chunk).count();
        self.lines = self
            .lines
            .saturating_add(u32::try_from(newlines).unwrap_or(u32::MAX));
        Ok(text)
    }

    /// The slow path: some line is not UTF-8. Such lines are blanked (kept
    /// as lines, so numbering holds) and listed.
    fn decode_lines(&mut self, chunk: &[u8]) -> String {
        let mut text = String::with_capacity(chunk.len());
        for (i, line) in chunk.split(|b| *b == b'\n').enumerate() {
            if i > 0 {
                text.push('\n');
            }
            match std::str::from_utf8(line) {
                Ok(l) => text.push_str(l),
                Err(_) => {
                    let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    self.not_utf8.push(self.lines.saturating_add(n));
                    self.bad_bytes += line.len();
                }
            }
        }
        text
    }

    /// The lines that were not UTF-8; if most of the bytes were not text,
    /// the whole thing is a binary file.
    pub fn finish(self) -> Result<Vec<u32>, Unreadable> {
        if self.bad_bytes * 2 > self.bytes {
            return Err(Unreadable::Binary {
                line: self.not_utf8.first().copied().unwrap_or(1),
            });
        }
        Ok(self.not_utf8)
    }
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
    memchr::memchr(0, bytes)
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
