//! TLS for SSL and SASL_SSL listeners, with rustls, from PEM files that are
//! reloaded when they change (see [`super::reload`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::reload::{self, Reloadable};

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientAuth {
    /// No client certificates are asked for.
    None,
    /// Asked for; a client without one connects as ANONYMOUS (on SSL).
    Requested,
    /// A certificate signed by the client CA is needed to connect.
    Required,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

fn load_certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no certificate"));
    }
    Ok(certs)
}

/// A rustls server configuration from the files' contents (in the order
/// of [`TlsFiles::paths`]).
fn server_config(files: &TlsFiles, contents: &[Vec<u8>]) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = load_certificates(&contents[0], "--tls-cert-file")?;
    let key = PrivateKeyDer::from_pem_slice(&contents[1])
        .map_err(|e| format!("--tls-key-file is not a PEM private key: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (files.client_auth, contents.get(2)) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err("client certificates need --tls-client-ca-file".into());
        }
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certificates(ca, "--tls-client-ca-file")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-client-ca-file: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("--tls-client-ca-file: {e}"))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not go together: {e}"))?;
    // Kafka clients do not negotiate ALPN; nothing to set. Session tickets
    // keep reconnects cheap.
    config.send_tls13_tickets = 2;
    Ok(config)
}

impl TlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.client_ca.clone());
        paths
    }

    /// The acceptor configuration, kept current as the files change.
    pub fn watch(&self, interval: Duration) -> Result<Arc<Reloadable<ServerConfig>>, String> {
        let files = self.clone();
        reload::watch("TLS certificate", self.paths(), interval, move |contents| {
            server_config(&files, contents)
        })
    }
}

/// The principal a client certificate names: its subject as a
/// distinguished name string (RFC 4514, as Kafka's default principal
/// mapping writes it, e.g. `CN=orders,OU=payments,O=Example`).
pub fn certificate_principal(der: &CertificateDer<'_>) -> Option<String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der.as_ref()).ok()?;
    Some(cert.tbs_certificate.subject.to_string())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    use super::*;

    fn certificate(dn: &[(DnType, &str)]) -> (String, String) {
        let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn the_subject_is_the_principal_most_specific_part_first() {
        let (pem, _) = certificate(&[
            (DnType::OrganizationName, "Example"),
            (DnType::CommonName, "orders-client"),
        ]);
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(
            certificate_principal(&der).as_deref(),
            Some("CN=orders-client,O=Example")
        );
        assert_eq!(
            certificate_principal(&CertificateDer::from(vec![1, 2, 3])),
            None
        );
    }

    #[test]
    fn configurations_load_and_mistakes_are_named() {
        let (cert, key) = certificate(&[(DnType::CommonName, "broker")]);
        let (other_cert, _) = certificate(&[(DnType::CommonName, "other")]);
        let files = |auth| TlsFiles {
            cert: "c".into(),
            key: "k".into(),
            client_ca: None,
            client_auth: auth,
        };
        let contents = |c: &str, k: &str| vec![c.as_bytes().to_vec(), k.as_bytes().to_vec()];
        assert!(server_config(&files(ClientAuth::None), &contents(&cert, &key)).is_ok());
        let mismatched =
            server_config(&files(ClientAuth::None), &contents(&other_cert, &key)).unwrap_err();
        assert!(mismatched.contains("do not go together"), "{mismatched}");
        assert!(
            server_config(&files(ClientAuth::None), &contents("junk", &key))
                .unwrap_err()
                .contains("--tls-cert-file")
        );
        assert!(
            server_config(&files(ClientAuth::None), &contents(&cert, "junk"))
                .unwrap_err()
                .contains("--tls-key-file")
        );
        assert!(
            server_config(&files(ClientAuth::Required), &contents(&cert, &key))
                .unwrap_err()
                .contains("--tls-client-ca-file")
        );
        let mut with_ca = contents(&cert, &key);
        with_ca.push(other_cert.into_bytes());
        assert!(server_config(&files(ClientAuth::Required), &with_ca).is_ok());
    }
}
