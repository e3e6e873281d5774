//! TLS for client connections: the certificate and key a router serves.
//!
//! ```text
//!  client ── SSLRequest ──► guard ── 'S' ──► TLS handshake (rustls) ──► StartupMessage …
//!                                 └─ 'N' when the router has no certificate
//! ```
//! TLS terminates in the guard (`crate::guard`), before any PostgreSQL message is read, so
//! authentication and every query run inside it. Clients choose: `sslmode=require` encrypts,
//! `verify-full` also checks the certificate against a CA and the host name. Plaintext
//! connections stay allowed, as PostgreSQL's `host` lines allow them.

use std::path::Path;
use std::sync::Arc;

use pgwire::tokio::tokio_rustls::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls::{self, pki_types};
use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};
use protocol::error::{Error, Result};

/// Builds the acceptor from PEM files: the certificate chain (server first) and its key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| Error::io(format!("reading {}: {e}", p.display())));
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::io(format!("{}: not a PEM certificate: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::io(format!(
            "{}: no certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| Error::io(format!("{}: not a PEM private key: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::io(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::io(format!("TLS certificate and key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
