//! Detached minisign signatures on lists: a list is taken only when the
//! signature verifies with the configured public key, so whoever controls
//! the web server (or the file share) cannot push a policy the IG team did
//! not sign.

use std::fmt;

use minisign_verify::{Error, PublicKey, Signature};

/// Why a list's signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// There is no `.minisig` beside the list (or it could not be fetched).
    Missing(String),
    /// The `.minisig` is not a minisign signature.
    Malformed,
    /// Signed, but with another key than `public_key`.
    WrongKey,
    /// The list is not what was signed (or the signature was tampered with).
    Bad,
    /// A legacy (non-prehashed) signature; `minisign -S` makes prehashed
    /// ones by default, and we take only those.
    Legacy,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::Missing(why) => write!(f, "signature missing: {why}"),
            SignatureError::Malformed => f.write_str("signature file is not a minisign signature"),
            SignatureError::WrongKey => {
                f.write_str("signature was made with another key than the configured public_key")
            }
            SignatureError::Bad => {
                f.write_str("signature does not verify: the list is not the file that was signed")
            }
            SignatureError::Legacy => f.write_str(
                "legacy minisign signature; sign with a current minisign (prehashed, the default)",
            ),
        }
    }
}

/// Checks `list` against its detached `signature` (the `.minisig` text).
/// `public_key` is the base64 line the configuration validated.
pub fn verify(public_key: &str, list: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    let key = PublicKey::from_base64(public_key).map_err(|_| SignatureError::WrongKey)?;
    let text = std::str::from_utf8(signature).map_err(|_| SignatureError::Malformed)?;
    let sig = Signature::decode(text).map_err(|_| SignatureError::Malformed)?;
    key.verify(list, &sig, false).map_err(|e| match e {
        Error::UnexpectedKeyId => SignatureError::WrongKey,
        Error::UnexpectedAlgorithm => SignatureError::Legacy,
        Error::InvalidEncoding => SignatureError::Malformed,
        _ => SignatureError::Bad,
    })
}

/// A signature read and matched to its key, ready to check a list that is
/// read a chunk at a time ([`Expected::verifier`]).
pub struct Expected {
    key: PublicKey,
    signature: Signature,
}

impl Expected {
    pub fn new(public_key: &str, signature: &[u8]) -> Result<Self, SignatureError> {
        let key = PublicKey::from_base64(public_key).map_err(|_| SignatureError::WrongKey)?;
        let text = std::str::from_utf8(signature).map_err(|_| SignatureError::Malformed)?;
        let signature = Signature::decode(text).map_err(|_| SignatureError::Malformed)?;
        Ok(Self { key, signature })
    }

    /// Hashes what it is given; [`Verifier::finish`] says whether that was
    /// the signed file. Only prehashed signatures (minisign's default) can
    /// be checked this way, and only those are accepted anyway.
    pub fn verifier(&self) -> Result<Verifier<'_>, SignatureError> {
        self.key
            .verify_stream(&self.signature)
            .map(Verifier)
            .map_err(|e| match e {
                Error::UnexpectedKeyId => SignatureError::WrongKey,
                Error::UnsupportedLegacyMode | Error::UnexpectedAlgorithm => SignatureError::Legacy,
                _ => SignatureError::Malformed,
            })
    }
}

pub struct Verifier<'a>(minisign_verify::StreamVerifier<'a>);

impl Verifier<'_> {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(mut self) -> Result<(), SignatureError> {
        self.0.finalize().map_err(|_| SignatureError::Bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `minisign -G -W` and `minisign -S` (testdata/).
    const KEY: &str = "RWSE0xrH4IemDpX/n9GQDNxsYn4MaRzwgSuFsRbQreUhh2wFw7tZQIBh";
    const SIGNED: &[u8] = include_bytes!("testdata/signed.txt");
    const SIG: &[u8] = include_bytes!("testdata/signed.txt.minisig");

    #[test]
    fn a_good_signature_verifies() {
        assert_eq!(verify(KEY, SIGNED, SIG), Ok(()));
    }

    #[test]
    fn a_changed_list_does_not() {
        assert_eq!(verify(KEY, b"hi!\n", SIG), Err(SignatureError::Bad));
    }

    #[test]
    fn another_key_is_named() {
        let other = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
        assert_eq!(verify(other, SIGNED, SIG), Err(SignatureError::WrongKey));
    }

    #[test]
    fn a_stream_verifies_like_the_whole() {
        let expected = Expected::new(KEY, SIG).unwrap();
        let mut v = expected.verifier().unwrap();
        for piece in SIGNED.chunks(3) {
            v.update(piece);
        }
        assert_eq!(v.finish(), Ok(()));
        let mut v = expected.verifier().unwrap();
        v.update(b"hi!\n");
        assert_eq!(v.finish(), Err(SignatureError::Bad));
        let other = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
        assert_eq!(
            Expected::new(other, SIG).unwrap().verifier().err(),
            Some(SignatureError::WrongKey)
        );
    }

    #[test]
    fn junk_is_malformed() {
        assert_eq!(
            verify(KEY, SIGNED, b"nonsense"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(KEY, SIGNED, b"\xff\xfe"),
            Err(SignatureError::Malformed)
        );
    }
}
