//! The block page's certificate: a PEM chain and key from files the
//! operator supplies (usually issued by the trust's internal CA), loaded at
//! start and again on SIGHUP. A reload that fails keeps the certificate in
//! service and says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("{cert} and {key} do not make a usable certificate: {why}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
}

/// The server configuration in service, swapped whole on reload.
pub struct Certificate {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
}

fn load(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let file_error = |path: &Path, why: String| TlsError::File {
        path: path.to_owned(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_error(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(
            &files.cert,
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        file_error(
            &files.key,
            format!("no usable PEM private key in it ({e}); expected PKCS#8, PKCS#1 or SEC1"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map(|mut c| {
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            c
        })
        .map_err(|e| TlsError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            why: e.to_string(),
        })
}

impl Certificate {
    /// Loads the files; at start a failure stops the server.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            files: files.clone(),
            current: ArcSwap::from_pointee(load(files)?),
        })
    }

    /// Reads the files again; on failure keeps the certificate in service.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = load(&self.files)?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }
}
