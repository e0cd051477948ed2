//! Mutual TLS between IDCs: the PEM files a domain is configured with, the TLS settings
//! for its federation server and its client connections, the peer's identity as its
//! certificate names it, and a development CA (`sluice certs`).
//!
//! A domain's certificate has its domain id as subject common name and as a DNS name
//! (clients check the server they reach is the domain they meant), plus `localhost` and
//! 127.0.0.1 for demos on one machine. The crypto provider is ring, the only one in the
//! dependency graph (two make rustls panic at the first handshake).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The PEM files of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signs every domain of the federation (trusted for peers).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The PEM text of one domain's credentials.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsMaterial")
            .field("cert_pem_len", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Cert(String),
}

impl TlsFiles {
    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| TlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        Ok(TlsMaterial {
            ca_pem: read(&self.ca)?,
            cert_pem: read(&self.cert)?,
            key_pem: read(&self.key)?,
        })
    }
}

impl TlsMaterial {
    /// The server side: our certificate, and client certificates required, signed by
    /// the federation's CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// The client side towards `domain`: its certificate must name it.
    pub fn client(&self, domain: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(domain)
    }
}

/// The domain a peer certificate (DER) speaks for: its subject common name.
pub fn peer_domain(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// A development certificate authority, for demos and tests: never for production.
pub struct DevCa {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

const CA_NAME: &str = "Sluice development CA";

fn cert_error(e: rcgen::Error) -> TlsError {
    TlsError::Cert(e.to_string())
}

impl DevCa {
    pub fn new() -> Result<DevCa, TlsError> {
        let params = DevCa::params()?;
        let key = KeyPair::generate().map_err(cert_error)?;
        let pem = params.self_signed(&key).map_err(cert_error)?.pem();
        Ok(DevCa { params, key, pem })
    }

    /// A CA made earlier: its certificate and key as written by [`DevCa::write`].
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<DevCa, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_error)?;
        Ok(DevCa {
            params: DevCa::params()?,
            key,
            pem: cert_pem.to_string(),
        })
    }

    fn params() -> Result<CertificateParams, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_NAME);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ok(params)
    }

    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate and key for `domain`, for both serving and calling peers.
    pub fn issue(&self, domain: &str) -> Result<(String, String), TlsError> {
        let mut params = CertificateParams::new(vec![domain.to_string(), "localhost".to_string()])
            .map_err(cert_error)?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, domain);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(cert_error)?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(cert_error)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The material for `domain`, in memory (tests).
    pub fn material(&self, domain: &str) -> Result<TlsMaterial, TlsError> {
        let (cert_pem, key_pem) = self.issue(domain)?;
        Ok(TlsMaterial {
            ca_pem: self.pem.clone(),
            cert_pem,
            key_pem,
        })
    }
}

/// Writes `text` to `path`, readable by the owner only when it is a key.
pub fn write_pem(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(path, text).map_err(err)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_names_its_domain_and_a_reloaded_ca_still_signs() {
        let ca = DevCa::new().unwrap();
        let (cert, _key) = ca.issue("geant").unwrap();
        let der = rustls_pem_der(&cert);
        assert_eq!(peer_domain(&der).as_deref(), Some("geant"));
        let again = DevCa::load(ca.cert_pem(), &ca.key_pem()).unwrap();
        let (cert, _) = again.issue("garr").unwrap();
        assert_eq!(peer_domain(&rustls_pem_der(&cert)).as_deref(), Some("garr"));
        assert_eq!(peer_domain(b"not a certificate"), None);
    }

    fn rustls_pem_der(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }
}
