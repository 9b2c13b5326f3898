//! The collector's own certificate authority: created once by `otwatch-collector init`, it
//! signs the server certificate agents verify. Files in the data folder:
//! `ca.pem` (give it to agents), `ca.key`, `server.pem`, `server.key`.
//!
//! The CA is valid for [`CA_VALIDITY_DAYS`], the server certificate for
//! [`SERVER_VALIDITY_DAYS`] (the most browsers accept). `serve` never reads `ca.key`: it can
//! live offline, and `otwatch-collector rotate-cert --ca-key PATH` brings it back only to sign
//! the next server certificate.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Days the certificate authority is valid.
pub const CA_VALIDITY_DAYS: i64 = 3652;

/// Days a server certificate is valid: 825, the most that browsers and the CA/Browser Forum
/// accept.
pub const SERVER_VALIDITY_DAYS: i64 = 825;

/// Why certificates could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Generating a key or certificate failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate does not parse.
    #[error("{path}: not a PEM certificate ({message})")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
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

/// Valid from an hour ago (clocks of agents differ a little) for `days`, and never past
/// `until` (a server certificate ends with its authority at the latest).
fn validity(params: &mut CertificateParams, days: i64, until: Option<time::OffsetDateTime>) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    let end = now + time::Duration::days(days);
    params.not_after = until.map_or(end, |u| end.min(u));
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
    validity(&mut ca_params, CA_VALIDITY_DAYS, None);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let files = Files::in_dir(data);
    write_private(&files.ca, &ca_cert.pem())?;
    write_private(&data.join("ca.key"), &ca_key.serialize_pem())?;
    server_certificate(&files, names, &issuer, Some(ca_params.not_after))?;
    Ok(files)
}

/// Replaces the server certificate and key in `data` with new ones for `names` (those of the
/// current certificate when empty), signed by the CA whose key is `ca_key_pem` (read by the
/// caller: it may be kept offline, readable by root only); returns the names. A running
/// collector serves the new certificate within [`crate::listener`]'s reload interval, without
/// a restart.
pub fn rotate(data: &Path, ca_key_pem: &str, names: &[String]) -> Result<Vec<String>, PkiError> {
    let files = Files::in_dir(data);
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| PkiError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&read(&files.ca)?, key)?;
    let names = if names.is_empty() {
        Certificate::read(&files.cert)?.names
    } else {
        names.to_vec()
    };
    let ca_ends =
        time::OffsetDateTime::from_unix_timestamp(Certificate::read(&files.ca)?.not_after).ok();
    server_certificate(&files, &names, &issuer, ca_ends)?;
    Ok(names)
}

/// Signs a new server key and certificate for `names`, valid until `ca_ends` at the latest,
/// and writes them, each through a temporary file of this call's own (synced, then renamed
/// over the old one; the key first). A reload that reads the new key with the old certificate
/// refuses the pair and tries again.
fn server_certificate(
    files: &Files,
    names: &[String],
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
    ca_ends: Option<time::OffsetDateTime>,
) -> Result<(), PkiError> {
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
    validity(&mut params, SERVER_VALIDITY_DAYS, ca_ends);
    let server_cert = params.signed_by(&server_key, issuer)?;
    for (path, contents) in [
        (&files.key, server_key.serialize_pem()),
        (&files.cert, server_cert.pem()),
    ] {
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        write_private(&tmp, &contents)?;
        std::fs::rename(&tmp, path).map_err(|source| PkiError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// What the collector needs to know of a certificate on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Its subject alternative names (DNS names and IP addresses).
    pub names: Vec<String>,
    /// Its end of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl Certificate {
    /// Reads the first certificate of a PEM file.
    pub fn read(path: &Path) -> Result<Self, PkiError> {
        let bad = |message: String| PkiError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|source| PkiError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).map_err(|e| bad(e.to_string()))?;
        let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(n) => names.push(n.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(b) => {
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                            16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                            _ => None,
                        };
                        names.extend(ip.map(|ip| ip.to_string()));
                    }
                    _ => {}
                }
            }
        }
        Ok(Self {
            names,
            not_after: cert.validity().not_after.timestamp(),
        })
    }
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
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days_left(not_after: i64) -> i64 {
        (not_after - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400
    }

    #[test]
    fn the_ca_lasts_ten_years_and_a_server_certificate_825_days_under_the_names_given() {
        let dir = tempfile::tempdir().unwrap();
        let files = create(dir.path(), &["plant.example".into(), "10.0.0.5".into()]).unwrap();
        let ca = Certificate::read(&files.ca).unwrap();
        let server = Certificate::read(&files.cert).unwrap();
        assert!((CA_VALIDITY_DAYS - 1..=CA_VALIDITY_DAYS).contains(&days_left(ca.not_after)));
        assert!(
            (SERVER_VALIDITY_DAYS - 1..=SERVER_VALIDITY_DAYS)
                .contains(&days_left(server.not_after))
        );
        assert_eq!(server.names, ["plant.example", "10.0.0.5"]);
    }

    #[test]
    fn rotation_keeps_the_names_unless_given_new_ones_and_signs_with_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let files = create(dir.path(), &["plant.example".into()]).unwrap();
        let ca = std::fs::read(&files.ca).unwrap();
        let before = std::fs::read(&files.cert).unwrap();
        let key = std::fs::read_to_string(dir.path().join("ca.key")).unwrap();
        assert_eq!(rotate(dir.path(), &key, &[]).unwrap(), ["plant.example"]);
        assert_ne!(std::fs::read(&files.cert).unwrap(), before);
        assert_eq!(std::fs::read(&files.ca).unwrap(), ca, "the CA stays");
        let renamed = rotate(dir.path(), &key, &["scada.example".into()]).unwrap();
        assert_eq!(renamed, ["scada.example"]);
        assert_eq!(Certificate::read(&files.cert).unwrap().names, renamed);
        // The new certificate chains to the CA: rustls accepts the pair.
        let served = crate::listener::ServedCertificate::load(
            &files.cert,
            &files.key,
            crate::listener::certificate_provider(),
        );
        assert!(served.is_ok());
    }
}
