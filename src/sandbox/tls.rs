//! HTTPS for the sandbox (`--tls`): a private CA and a leaf certificate for `127.0.0.1` and
//! `localhost`, generated at start (rcgen) and served with rustls, HTTP/2 or HTTP/1.1 by ALPN. Clients trust the CA
//! certificate ([`SandboxTls::ca_pem`], written by `--cert-out`) the way they would trust a
//! corporate CA with `--ca-cert`; nothing is ever read from or written to a key store.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A generated CA, the server's certificate chain and the acceptor that serves it.
#[derive(Clone)]
pub(crate) struct SandboxTls {
    /// The CA certificate, PEM: what a client must trust.
    pub(crate) ca_pem: String,
    pub(crate) acceptor: TlsAcceptor,
}

impl SandboxTls {
    pub(crate) fn generate() -> Result<SandboxTls, String> {
        let fail = |e: rcgen::Error| format!("cannot generate the sandbox certificate: {e}");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "reactbatch sandbox CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(fail)?)
            .map_err(fail)?;
        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .map_err(fail)?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "reactbatch sandbox");
        let leaf_key = KeyPair::generate().map_err(fail)?;
        let leaf = leaf_params.signed_by(&leaf_key, &ca).map_err(fail)?;

        let chain = vec![leaf.der().clone(), CertificateDer::from(ca.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        // An explicit provider: the process may hold more than one rustls backend.
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("cannot configure TLS: {e}"))?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| format!("cannot configure TLS: {e}"))?;
        // HTTP/2 for clients that offer it, as the real services negotiate it.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(SandboxTls {
            ca_pem: ca.pem(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}
