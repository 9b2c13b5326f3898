//! The server certificate as served: read from `server.pem` and `server.key`, and read again
//! when `rotate-cert` replaces them, so a rotation needs no restart. Handshakes only read what
//! is loaded; the files are checked by [`ServedCertificate::refresh`], which `serve` calls
//! every few seconds.
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;
use crate::auth::FileStamp;
use crate::pki;

/// What is loaded, and from which versions of the files.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Option<FileStamp>, Option<FileStamp>),
    not_after: i64,
}

/// The certificate and key the listener presents.
#[derive(Debug)]
pub struct ServedCertificate {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: RwLock<Arc<Loaded>>,
}

impl ServedCertificate {
    /// Loads the chain in `cert` and the key in `key` (PEM files).
    pub fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let loaded = Self::read(cert, key, &provider)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            loaded: RwLock::new(Arc::new(loaded)),
        })
    }

    fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
        let stamps = (FileStamp::of(cert), FileStamp::of(key));
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError::Pem(cert.display().to_string(), e))?;
        let private = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| TlsError::Pem(key.display().to_string(), e))?;
        let certified = CertifiedKey::from_der(chain, private, provider)?;
        let not_after = pki::Certificate::read(cert)
            .map_err(|e| TlsError::Certificate(e.to_string()))?
            .not_after;
        Ok(Loaded {
            key: Arc::new(certified),
            stamps,
            not_after,
        })
    }

    fn current(&self) -> Arc<Loaded> {
        match self.loaded.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the files again if either changed; returns whether a new certificate is now
    /// served. A pair that does not load (a key that does not match, a file half written)
    /// leaves the one served in place and is tried again next time.
    pub fn refresh(&self) -> Result<bool, TlsError> {
        let now = (FileStamp::of(&self.cert), FileStamp::of(&self.key));
        if now == self.current().stamps {
            return Ok(false);
        }
        let loaded = Self::read(&self.cert, &self.key, &self.provider)?;
        match self.loaded.write() {
            Ok(mut l) => *l = Arc::new(loaded),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(loaded),
        }
        Ok(true)
    }

    /// When the certificate served ends, in seconds since the Unix epoch.
    pub fn not_after(&self) -> i64 {
        self.current().not_after
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}
