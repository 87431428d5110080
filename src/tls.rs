//! rustls configurations for the three listeners of the control service and
//! for its clients, and extraction of a peer's identity from its certificate.
//!
//! # What is checked where
//!
//! Every connection is mutually authenticated; certificates come from the
//! cluster's own certificate authority (see [`crate::ca`]).
//!
//! **Servers** ([`server_config`]) require a client certificate and accept
//! it only if, during the handshake:
//!
//! 1. it chains to `cluster.crt` and is currently valid, with the
//!    clientAuth extended key usage (rustls' `WebPkiClientVerifier`);
//! 2. its subject OU is the cluster UUID, i.e. the OU of `cluster.crt`
//!    (defence in depth should a CA ever be shared between clusters);
//! 3. its subject CN has the form of the listener's [`PeerRole`]:
//!    `user-<name>` on the REST API port (4523), `node-<uuid>` on the agent
//!    port (4524), exactly `control-service` on the peer port (4525).
//!
//! Anything else fails the TLS handshake itself, so no request from a wrong
//! or unauthenticated peer ever reaches a handler. This is stricter than the
//! original Flocker, which checked only the chain and the CN prefix: here a
//! node certificate cannot be used on the API port and vice versa, and the
//! node UUID taken from the certificate ([`peer_identity`]) is what the
//! agent protocol binds a connection to.
//!
//! **Clients** ([`client_config`]: API client, agents, control peers)
//! present their own certificate and verify the server's chain against
//! `cluster.crt`, checking it for the name `control-service` whatever
//! address was dialled (exactly as Flocker's own clients do: every control
//! node's certificate carries `DNS:control-service`), plus its subject
//! (`CN=control-service`, `OU=<cluster UUID>`).
//!
//! Both TLS 1.3 and TLS 1.2 are enabled, because the Python 2.7 clients of
//! the original Flocker cannot speak TLS 1.3. All configurations use the
//! `ring` crypto provider explicitly. ALPN: servers offer `http/1.1` and
//! also accept clients that send no ALPN extension; clients offer
//! `http/1.1` (a caller speaking something else over the agent port may
//! clone the configuration and change `alpn_protocols`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject;
use uuid::Uuid;

use crate::ca::{self, CONTROL_SERVICE_NAME, NODE_CN_PREFIX, USER_CN_PREFIX};

/// The ALPN protocol identifier offered by servers and clients.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// The protocol versions enabled by default: TLS 1.3 and TLS 1.2.
pub static DEFAULT_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Which kind of peer a server listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// REST API users: CN `user-<name>`.
    ApiUser,
    /// Agents: CN `node-<uuid>`.
    Node,
    /// Other control nodes: CN `control-service`.
    ControlService,
}

impl fmt::Display for PeerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerRole::ApiUser => "API user",
            PeerRole::Node => "node",
            PeerRole::ControlService => "control service",
        })
    }
}

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// An API user (CN `user-<name>`); the name without the prefix.
    User(String),
    /// A node agent (CN `node-<uuid>`); the node UUID.
    Node(Uuid),
    /// A control service node (CN `control-service`).
    ControlService,
}

impl PeerIdentity {
    /// The role this identity plays.
    pub fn role(&self) -> PeerRole {
        match self {
            PeerIdentity::User(_) => PeerRole::ApiUser,
            PeerIdentity::Node(_) => PeerRole::Node,
            PeerIdentity::ControlService => PeerRole::ControlService,
        }
    }
}

/// The three PEM files a TLS endpoint needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate, `cluster.crt`.
    pub ca_cert: PathBuf,
    /// This endpoint's certificate (chain), leaf first.
    pub cert: PathBuf,
    /// This endpoint's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// `dir/cluster.crt`, `dir/<stem>.crt`, `dir/<stem>.key`, e.g.
    /// `TlsFiles::in_dir("/etc/flocker", "control-service")` or
    /// `TlsFiles::in_dir(agent_dir, "node")`.
    pub fn in_dir(dir: &Path, stem: &str) -> TlsFiles {
        TlsFiles {
            ca_cert: dir.join(ca::CA_CERT_FILE),
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        }
    }
}

/// Errors building TLS configurations or identifying peers. Messages name
/// the offending file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("unable to read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file holds no usable PEM certificate.
    #[error("{}: no usable PEM certificate: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    /// A file holds no usable PEM private key.
    #[error("{}: no usable PEM private key: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    /// The CA certificate cannot be used as the cluster trust anchor.
    #[error("{}: not a usable cluster certificate authority: {reason}", path.display())]
    BadAuthority { path: PathBuf, reason: String },
    /// Certificate and key are individually fine but rustls refuses them
    /// (e.g. the key does not belong to the certificate).
    #[error("certificate {} with key {} rejected: {reason}", cert.display(), key.display())]
    BadCredentials {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    /// A peer certificate does not name a Flocker identity.
    #[error("peer certificate does not identify a Flocker peer: {0}")]
    BadPeerCertificate(String),
    /// The connection has no peer certificate (handshake not done?).
    #[error("the connection has no peer certificate")]
    NoPeerCertificate,
    /// Any other rustls configuration error.
    #[error("TLS configuration error: {0}")]
    Config(String),
}

/// Server configuration for a listener accepting peers of role `accept`.
/// See the module documentation for what is checked.
pub fn server_config(tls: &TlsFiles, accept: PeerRole) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let trust = load_trust(&tls.ca_cert)?;
    let inner = WebPkiClientVerifier::builder_with_provider(trust.roots, provider.clone())
        .build()
        .map_err(|e| TlsError::BadAuthority {
            path: tls.ca_cert.clone(),
            reason: e.to_string(),
        })?;
    let verifier = Arc::new(ClusterClientVerifier {
        inner,
        cluster_id: trust.cluster_id,
        role: accept,
    });
    let (certs, key) = load_credentials(tls)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(DEFAULT_VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| bad_credentials(tls, e))?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// Client configuration (TLS 1.3 and 1.2): presents `tls.cert`, verifies the
/// server against `tls.ca_cert` for the name `control-service`.
pub fn client_config(tls: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_for_versions(tls, DEFAULT_VERSIONS)
}

/// Like [`client_config`] restricted to the given protocol versions (e.g.
/// `&[&rustls::version::TLS12]` to behave like an old client).
pub fn client_config_for_versions(
    tls: &TlsFiles,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let trust = load_trust(&tls.ca_cert)?;
    let inner = WebPkiServerVerifier::builder_with_provider(trust.roots, provider.clone())
        .build()
        .map_err(|e| TlsError::BadAuthority {
            path: tls.ca_cert.clone(),
            reason: e.to_string(),
        })?;
    let name =
        ServerName::try_from(CONTROL_SERVICE_NAME).map_err(|e| TlsError::Config(e.to_string()))?;
    let verifier = Arc::new(ControlServiceVerifier {
        inner,
        name,
        cluster_id: trust.cluster_id,
    });
    let (certs, key) = load_credentials(tls)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .map_err(|e| bad_credentials(tls, e))?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// The identity a certificate's subject CN names: `user-<name>`,
/// `node-<uuid>` or `control-service`. This does not verify the certificate
/// (the handshake did); use it on `peer_certificates()[0]`.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Result<PeerIdentity, TlsError> {
    let names = ca::parse_subject(cert.as_ref()).map_err(TlsError::BadPeerCertificate)?;
    identity_of(&names).map_err(TlsError::BadPeerCertificate)
}

/// The identity of the peer of an established connection (server or
/// client side: pass `&*connection`, which derefs to `CommonState`).
pub fn connection_peer_identity(conn: &rustls::CommonState) -> Result<PeerIdentity, TlsError> {
    let cert = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or(TlsError::NoPeerCertificate)?;
    peer_identity(cert)
}

// ---------------------------------------------------------------------------
// Internals

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn identity_of(names: &ca::SubjectNames) -> Result<PeerIdentity, String> {
    let cn = names
        .common_name
        .as_deref()
        .ok_or_else(|| "the subject has no single commonName".to_owned())?;
    if cn == CONTROL_SERVICE_NAME {
        Ok(PeerIdentity::ControlService)
    } else if let Some(node) = cn.strip_prefix(NODE_CN_PREFIX) {
        Uuid::parse_str(node)
            .map(PeerIdentity::Node)
            .map_err(|_| format!("commonName {cn:?} does not hold a node UUID"))
    } else if let Some(user) = cn.strip_prefix(USER_CN_PREFIX) {
        if user.is_empty() {
            Err(format!("commonName {cn:?} has an empty user name"))
        } else {
            Ok(PeerIdentity::User(user.to_owned()))
        }
    } else {
        Err(format!("commonName {cn:?} is not a Flocker identity"))
    }
}

/// Check that `der` belongs to cluster `cluster_id` and has role `role`.
fn check_peer(der: &[u8], cluster_id: Uuid, role: PeerRole) -> Result<PeerIdentity, String> {
    let names = ca::parse_subject(der)?;
    let cert_cluster = ca::cluster_id_of(&names)?;
    if cert_cluster != cluster_id {
        return Err(format!(
            "certificate belongs to cluster {cert_cluster}, not {cluster_id}"
        ));
    }
    let identity = identity_of(&names)?;
    if identity.role() != role {
        return Err(format!(
            "a {} certificate ({identity:?}) is not accepted where a {role} is expected",
            identity.role()
        ));
    }
    Ok(identity)
}

struct Trust {
    roots: Arc<RootCertStore>,
    cluster_id: Uuid,
}

fn load_trust(path: &Path) -> Result<Trust, TlsError> {
    let certs = read_certificates(path)?;
    let bad = |reason: String| TlsError::BadAuthority {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let mut cluster_id = None;
    for cert in certs {
        let names = ca::parse_subject(cert.as_ref()).map_err(bad)?;
        let id = ca::cluster_id_of(&names).map_err(bad)?;
        if cluster_id.is_some_and(|known| known != id) {
            return Err(bad("it holds certificates of several clusters".to_owned()));
        }
        cluster_id = Some(id);
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    let cluster_id = cluster_id.ok_or_else(|| bad("no certificate".to_owned()))?;
    Ok(Trust {
        roots: Arc::new(roots),
        cluster_id,
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let bad = |reason: String| TlsError::BadCertificate {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE section found".to_owned()));
    }
    Ok(certs)
}

fn load_credentials(
    tls: &TlsFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = read_certificates(&tls.cert)?;
    let pem = read_file(&tls.key)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::BadKey {
        path: tls.key.clone(),
        reason: e.to_string(),
    })?;
    Ok((certs, key))
}

fn bad_credentials(tls: &TlsFiles, e: rustls::Error) -> TlsError {
    TlsError::BadCredentials {
        cert: tls.cert.clone(),
        key: tls.key.clone(),
        reason: e.to_string(),
    }
}

fn rejected() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// Client certificate verifier: webpki chain verification, then the
/// cluster and role checks.
#[derive(Debug)]
struct ClusterClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    cluster_id: Uuid,
    role: PeerRole,
}

impl ClientCertVerifier for ClusterClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                tracing::warn!(role = %self.role, error = %e, "client certificate rejected");
            })?;
        match check_peer(end_entity.as_ref(), self.cluster_id, self.role) {
            Ok(_) => Ok(verified),
            Err(reason) => {
                tracing::warn!(role = %self.role, %reason, "client certificate rejected");
                Err(rejected())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server certificate verifier: webpki chain verification for the fixed
/// name `control-service`, then the cluster and role checks.
#[derive(Debug)]
struct ControlServiceVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
    cluster_id: Uuid,
}

impl ServerCertVerifier for ControlServiceVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            &self.name,
            ocsp_response,
            now,
        )?;
        match check_peer(
            end_entity.as_ref(),
            self.cluster_id,
            PeerRole::ControlService,
        ) {
            Ok(_) => Ok(verified),
            Err(reason) => {
                tracing::warn!(%reason, "server certificate rejected");
                Err(rejected())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(cn: Option<&str>, ou: Option<&str>) -> ca::SubjectNames {
        ca::SubjectNames {
            common_name: cn.map(str::to_owned),
            organizational_unit: ou.map(str::to_owned),
        }
    }

    #[test]
    fn identities_from_common_names() {
        let id = Uuid::new_v4();
        assert_eq!(
            identity_of(&names(Some("user-alice"), None)).unwrap(),
            PeerIdentity::User("alice".into())
        );
        assert_eq!(
            identity_of(&names(Some(&format!("node-{id}")), None)).unwrap(),
            PeerIdentity::Node(id)
        );
        assert_eq!(
            identity_of(&names(Some("control-service"), None)).unwrap(),
            PeerIdentity::ControlService
        );
        assert!(identity_of(&names(Some("node-notauuid"), None)).is_err());
        assert!(identity_of(&names(Some("user-"), None)).is_err());
        assert!(identity_of(&names(Some("control-service2"), None)).is_err());
        assert!(identity_of(&names(Some("admin"), None)).is_err());
        assert!(identity_of(&names(None, None)).is_err());
    }

    #[test]
    fn roles() {
        assert_eq!(PeerIdentity::User("x".into()).role(), PeerRole::ApiUser);
        assert_eq!(PeerIdentity::Node(Uuid::nil()).role(), PeerRole::Node);
        assert_eq!(
            PeerIdentity::ControlService.role(),
            PeerRole::ControlService
        );
    }

    #[test]
    fn check_peer_requires_cluster_and_role() {
        let dir = tempfile::tempdir().unwrap();
        let info = ca::initialize(dir.path(), "c").unwrap();
        let files = ca::create_api_certificate(dir.path(), dir.path(), "alice").unwrap();
        let pem = std::fs::read(&files.cert_path).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(
            check_peer(&der, info.cluster_id, PeerRole::ApiUser).unwrap(),
            PeerIdentity::User("alice".into())
        );
        assert!(check_peer(&der, Uuid::new_v4(), PeerRole::ApiUser).is_err());
        assert!(check_peer(&der, info.cluster_id, PeerRole::Node).is_err());
        assert!(check_peer(&der, info.cluster_id, PeerRole::ControlService).is_err());
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::in_dir(dir.path(), "control-service");
        let err = server_config(&files, PeerRole::ApiUser).unwrap_err();
        assert!(err.to_string().contains("cluster.crt"), "{err}");
        ca::initialize(dir.path(), "c").unwrap();
        let err = server_config(&files, PeerRole::ApiUser).unwrap_err();
        assert!(err.to_string().contains("control-service.crt"), "{err}");
    }
}
