//! The collector's own certificate authority: created once by `otwatch-collector init`, it
//! signs the server certificate agents verify. Files in the data folder:
//! `ca.pem` (give it to agents), `ca.key`, `server.pem`, `server.key`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Generating a key or certificate failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing a file failed.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Paths of the PEM files in a data folder.
pub struct Files {
    /// The CA certificate agents trust.
    pub ca: PathBuf,
    /// The server certificate.
    pub cert: PathBuf,
    /// The server key.
    pub key: PathBuf,
}

impl Files {
    /// The files in `data`.
    pub fn in_dir(data: &Path) -> Self {
        Self {
            ca: data.join("ca.pem"),
            cert: data.join("server.pem"),
            key: data.join("server.key"),
        }
    }
}

/// Creates a CA and a server certificate for `names` (DNS names or IP addresses) in `data`.
pub fn create(data: &Path, names: &[String]) -> Result<Files, PkiError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "otwatch collector CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "otwatch collector");
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_cert = params.signed_by(&server_key, &issuer)?;

    let files = Files::in_dir(data);
    for (path, contents) in [
        (&files.ca, ca_cert.pem()),
        (&data.join("ca.key"), ca_key.serialize_pem()),
        (&files.cert, server_cert.pem()),
        (&files.key, server_key.serialize_pem()),
    ] {
        write_private(path, &contents)?;
    }
    Ok(files)
}

/// Writes a file readable by its owner only (keys) or by all (certificates are public anyway,
/// but one rule for all keeps it simple).
fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)
}
