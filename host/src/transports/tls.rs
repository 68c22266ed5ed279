//! TLS for the `http` medium: a rustls server configuration (ring as the
//! crypto provider: no C toolchain beyond what ring builds itself) from the
//! PEM files a binding names, with ALPN offering `h2` and `http/1.1`.
//!
//! Loaded when a manifest is staged, so a missing or malformed file is a
//! manifest problem that names the field and the file, before anything
//! listens; and again when the listener binds.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// `tls = { cert = "...", key = "..." }` of an `http` binding: PEM files,
/// relative to the manifest's directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The server configuration of `files`. The error starts with the field
/// (`cert: ...` or `key: ...`) and names the file.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    let certs = certificates(&files.cert).map_err(|e| format!("cert: {}: {e}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("key: {}: {}", files.key.display(), pem_error(e)))?;
    let mut config = ServerConfig::builder_with_provider(ring::default_provider().into())
        // TLS 1.3 only, named here: rustls's `tls12` feature is on in the
        // build through other crates, so its safe defaults include TLS 1.2.
        .with_protocol_versions(&[&tokio_rustls::rustls::version::TLS13])
        .map_err(|e| format!("cert: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "key: {} does not go with {}: {e}",
                files.key.display(),
                files.cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

fn pem_error(e: tokio_rustls::rustls::pki_types::pem::Error) -> String {
    use tokio_rustls::rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "no PEM private key in it".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_files_name_the_field_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let missing = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: junk.clone(),
        };
        let err = server_config(&missing).unwrap_err();
        assert!(err.starts_with("cert: ") && err.contains("nope.pem"), "{err}");
        let junk_cert = TlsFiles {
            cert: junk.clone(),
            key: junk,
        };
        let err = server_config(&junk_cert).unwrap_err();
        assert!(err.starts_with("cert: ") && err.contains("junk.pem"), "{err}");
    }
}
