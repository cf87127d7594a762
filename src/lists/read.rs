//! A local list read, verified and parsed a chunk of whole lines at a time.
//!
//! Why this shape: a reload's peak memory is whatever it holds beside the
//! policy in service. Reading the file whole held its text (24 MB for a
//! million names) and the parsed list (about 35 MB) at once, which set the
//! peak; a chunk of 1 MiB is parsed and dropped instead, so the peak is the
//! parsed list alone. Every check a whole read made is made here too, on
//! each chunk: signature (the hash is fed as the bytes go by; nothing is
//! taken until it verifies), digest, HTML, NUL, UTF-8 by line. RPZ, whose
//! records span lines and whose `$ORIGIN` carries over, is gathered whole
//! and parsed at the end.

use super::signature::{Expected, SignatureError};
use super::source::{Decoder, Digest, LineChunks, Stamp, Unreadable, open_regular};
use super::{FormatChoice, ParsedList, choose_format, line_by_line, parse, parse_chunk, sized_for};

/// A list file, parsed.
pub struct FileList {
    pub parsed: ParsedList,
    /// Lines that were not UTF-8 (blanked before parsing).
    pub not_utf8: Vec<u32>,
    /// Of the file's bytes ([`Digest`]), as a whole read would give.
    pub digest: u64,
    /// What `fstat` said of the file when it was opened.
    pub stamp: Stamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    Unreadable(Unreadable),
    Signature(SignatureError),
}

impl From<Unreadable> for ReadError {
    fn from(e: Unreadable) -> Self {
        ReadError::Unreadable(e)
    }
}

impl From<SignatureError> for ReadError {
    fn from(e: SignatureError) -> Self {
        ReadError::Signature(e)
    }
}

/// Reads the regular file at `path` (at most `cap` bytes), checks it
/// against `signature` when one is expected, and parses it.
pub fn read_file(
    path: &std::path::Path,
    cap: u64,
    choice: FormatChoice,
    signature: Option<&Expected>,
) -> Result<FileList, ReadError> {
    let (file, stamp) = open_regular(path, cap)?;
    read_chunks(LineChunks::new(file, cap), stamp, choice, signature)
}

fn read_chunks(
    mut chunks: LineChunks,
    stamp: Stamp,
    choice: FormatChoice,
    signature: Option<&Expected>,
) -> Result<FileList, ReadError> {
    let mut verifier = signature.map(Expected::verifier).transpose()?;
    let mut decoder = Decoder::new(None);
    let mut digest = Digest::default();
    let mut list: Option<ParsedList> = None;
    // RPZ only: the whole text.
    let mut whole = String::new();
    let mut last_line = 0u32;
    while let Some(chunk) = chunks.next_chunk()? {
        digest.update(chunk);
        if let Some(v) = &mut verifier {
            v.update(chunk);
        }
        let first_line = decoder.lines().saturating_add(1);
        let text = decoder.feed(chunk)?;
        let list = list.get_or_insert_with(|| {
            let format = choose_format(&text, choice);
            let lines = memchr::memchr_iter(b'\n', text.as_bytes()).count().max(1);
            // Half the first chunk's average line length: room for the
            // rules of a file whose later lines are shorter, without a
            // doubling (untouched room costs address space, not memory).
            let line_len = (text.len() / lines / 2).max(1);
            sized_for(format, stamp.len as usize, line_len)
        });
        if line_by_line(list.format()) {
            last_line = last_line.max(parse_chunk(list, &text, first_line));
        } else {
            whole.push_str(&text);
        }
    }
    if let Some(v) = verifier {
        v.finish()?;
    }
    let not_utf8 = decoder.finish()?;
    let parsed = match list {
        Some(mut list) if line_by_line(list.format()) => {
            list.set_line_count(last_line);
            list
        }
        Some(list) => parse(&whole, FormatChoice::Fixed(list.format())),
        None => parse("", choice),
    };
    Ok(FileList {
        parsed,
        not_utf8,
        digest: digest.finish(),
        stamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::Format;
    use crate::lists::source::decode;

    /// Every kind of line each format knows, good and bad.
    const LINES: &[&str] = &[
        "# a comment",
        "",
        "zoom.us",
        "0.0.0.0 ads.example",
        "127.0.0.1 a.example b.example # two",
        "||tracker.example^",
        "@@||allowed.example^",
        "*.wild.example",
        "not a name!",
        "||x.example^$third-party",
        "   spaced.example   ",
        "bücher.example",
        "a..b",
        "! adblock comment",
        "xn--bcher-kva.example",
    ];

    fn text(n: usize) -> String {
        let mut s = String::from("\u{feff}");
        for i in 0..n {
            s.push_str(LINES[i % LINES.len()]);
            s.push(if i % 7 == 0 { '\r' } else { ' ' });
            s.push('\n');
        }
        s.push_str("last.example");
        s
    }

    fn streamed(bytes: &[u8], chunk: usize, choice: FormatChoice) -> Result<FileList, ReadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list");
        std::fs::write(&path, bytes).unwrap();
        let (file, stamp) = open_regular(&path, 1 << 30).unwrap();
        read_chunks(
            LineChunks::with_chunk(file, 1 << 30, chunk),
            stamp,
            choice,
            None,
        )
    }

    #[test]
    fn chunks_parse_as_the_whole_does() {
        let t = text(3000);
        let whole = decode(t.as_bytes(), None).unwrap();
        for format in Format::ALL {
            let choice = FormatChoice::Fixed(format);
            let expected = parse(&whole.text, choice);
            for chunk in [7, 64, 1000, 1 << 20] {
                let got = streamed(t.as_bytes(), chunk, choice).unwrap();
                assert!(got.parsed == expected, "{format:?} in chunks of {chunk}");
                assert_eq!(got.digest, Digest::of(t.as_bytes()));
            }
        }
    }

    #[test]
    fn bad_bytes_are_located_in_the_whole_file() {
        let mut bytes = text(500).into_bytes();
        // Line 301 gets an invalid byte, line 420 a NUL.
        let at = |bytes: &[u8], line: usize| {
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .nth(line - 2)
                .unwrap()
                .0
                + 1
        };
        let i = at(&bytes, 301);
        bytes[i] = 0xff;
        let got = streamed(&bytes, 64, FormatChoice::Fixed(Format::Domains)).unwrap();
        assert_eq!(got.not_utf8, [301]);
        let i = at(&bytes, 420);
        bytes[i] = 0;
        assert_eq!(
            streamed(&bytes, 64, FormatChoice::Fixed(Format::Domains)).err(),
            Some(ReadError::Unreadable(Unreadable::Binary { line: 420 }))
        );
    }

    #[test]
    fn html_and_empty_files_read_as_a_whole_read_does() {
        assert_eq!(
            streamed(b"\n<!doctype html>\n<p>", 4, FormatChoice::Auto).err(),
            Some(ReadError::Unreadable(Unreadable::Html))
        );
        let empty = streamed(b"", 4, FormatChoice::Auto).unwrap();
        assert!(empty.parsed.is_empty());
        assert_eq!(empty.digest, Digest::of(b""));
    }

    #[test]
    fn a_long_line_grows_the_buffer() {
        let long = format!("{}.example\nb.example\n", "a".repeat(5000));
        let got = streamed(long.as_bytes(), 16, FormatChoice::Fixed(Format::Domains)).unwrap();
        assert_eq!(got.parsed.line_count(), 2);
        assert_eq!(got.parsed.len() as u64 + got.parsed.skipped().count, 2);
    }
}
