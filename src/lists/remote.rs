//! Downloading lists: conditional requests over HTTPS (or HTTP when the
//! URL says so), with a deadline and a size cap.
//!
//! One [`Fetcher`] (one connection pool) serves every remote list. It knows
//! nothing of parsing or guard rails: it returns bytes, "not modified", or
//! why not, and the reloader decides what they are worth.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};

use super::source::MAX_DOWNLOAD_BYTES;

/// A whole fetch (connect, headers, body) must finish within this.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server said last time, sent back so an unchanged list costs a
/// `304 Not Modified` and nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A fetched body.
#[derive(Debug)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub validators: Validators,
}

#[derive(Debug)]
pub enum Fetched {
    /// The copy we have is current.
    NotModified,
    New(Body),
}

/// Why a download failed: each is an unreadable list, kept at its
/// previous version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP {0}")]
    Status(u16),
    #[error("no answer within {}s", FETCH_TIMEOUT.as_secs())]
    Timeout,
    #[error("larger than {} MiB; refused", MAX_DOWNLOAD_BYTES >> 20)]
    TooBig,
    #[error("{0}")]
    Transport(String),
}

/// Why the HTTPS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("tls_ca {path}: {why}")]
    Ca { path: String, why: String },
    #[error("cannot set up the HTTPS client: {0}")]
    Build(String),
}

/// The HTTP client every remote list shares.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    /// Trusts the system's roots plus, when given, the PEM certificates in
    /// `extra_ca` (a trust's internal CA).
    pub fn new(extra_ca: Option<&Path>) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        // A host without a system store still works with `tls_ca`.
        let system = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(system.certs);
        if let Some(path) = extra_ca {
            let ca = |why: String| ClientError::Ca {
                path: path.display().to_string(),
                why,
            };
            let pem = std::fs::read(path).map_err(|e| ca(super::source::io_reason(&e)))?;
            let mut added = 0;
            for cert in rustls_pemfile_certs(&pem) {
                roots
                    .add(cert)
                    .map_err(|e| ca(format!("not a usable CA certificate: {e}")))?;
                added += 1;
            }
            if added == 0 {
                return Err(ca("holds no PEM certificate".into()));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Build(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("sinkhole/", env!("CARGO_PKG_VERSION")))
            // Follow redirects, but never from https down to http: a list
            // asked for over TLS must arrive over TLS.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let downgrade = attempt.url().scheme() == "http"
                    && attempt.previous().iter().any(|u| u.scheme() == "https");
                if downgrade {
                    attempt.error("redirected from https to http; refused")
                } else if attempt.previous().len() >= 5 {
                    attempt.error("more than 5 redirects")
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Self { client })
    }

    /// Fetches `url`, conditionally when `known` holds validators.
    pub async fn fetch(&self, url: &str, known: &Validators) -> Result<Fetched, FetchError> {
        let mut req = self.client.get(url);
        if let Some(etag) = &known.etag {
            req = req.header(IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &known.last_modified {
            req = req.header(IF_MODIFIED_SINCE, lm);
        }
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_DOWNLOAD_BYTES)
        {
            return Err(FetchError::TooBig);
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let validators = Validators {
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
        };
        let content_type = header(CONTENT_TYPE);
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if (bytes.len() + chunk.len()) as u64 > MAX_DOWNLOAD_BYTES {
                return Err(FetchError::TooBig);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::New(Body {
            bytes,
            content_type,
            validators,
        }))
    }

    /// Fetches a small companion file (a `.minisig`), unconditionally.
    pub async fn fetch_small(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        const MAX: u64 = 64 << 10;
        let mut resp = self.client.get(url).send().await.map_err(transport)?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if (bytes.len() + chunk.len()) as u64 > MAX {
                return Err(FetchError::TooBig);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// A reqwest error as an operator reads it: the innermost cause (e.g.
/// "Connection refused", "invalid peer certificate: UnknownIssuer").
fn transport(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        return FetchError::Timeout;
    }
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let inner = cause.to_string();
    let inner = match inner.find(" (os error") {
        Some(i) => inner[..i].to_owned(),
        None => inner,
    };
    FetchError::Transport(if e.is_connect() {
        format!("cannot connect: {inner}")
    } else {
        inner
    })
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}
