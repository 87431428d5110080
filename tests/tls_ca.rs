//! Certificate authority and TLS configuration: real certificates, real
//! handshakes over loopback TCP (port 0), and the `flocker-ca` binary.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use flocker::ca::{self, CaError, CaInfo};
use flocker::tls::{
    self, client_config, client_config_for_versions, connection_peer_identity, peer_identity,
    server_config, PeerIdentity, PeerRole, TlsFiles,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use uuid::Uuid;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256};
use x509_parser::prelude::{X509Certificate, X509Version};
use x509_parser::public_key::PublicKey;

// ---------------------------------------------------------------------------
// Helpers

/// A cluster CA in its own temporary directory, with a control certificate
/// installed as control-service.crt/.key.
struct Cluster {
    dir: TempDir,
    info: CaInfo,
}

impl Cluster {
    fn new(name: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let info = ca::initialize(dir.path(), name).unwrap();
        let files =
            ca::create_control_certificate(dir.path(), dir.path(), "127.0.0.1", &[]).unwrap();
        fs::rename(&files.cert_path, dir.path().join("control-service.crt")).unwrap();
        fs::rename(&files.key_path, dir.path().join("control-service.key")).unwrap();
        Cluster { dir, info }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn control(&self) -> TlsFiles {
        TlsFiles::in_dir(self.path(), "control-service")
    }

    fn user(&self, name: &str) -> TlsFiles {
        ca::create_api_certificate(self.path(), self.path(), name).unwrap();
        TlsFiles::in_dir(self.path(), name)
    }

    fn node(&self) -> (Uuid, TlsFiles) {
        let id = ca::create_node_certificate(self.path(), self.path()).unwrap();
        (id, TlsFiles::in_dir(self.path(), &id.to_string()))
    }

    fn server(&self, role: PeerRole) -> Arc<ServerConfig> {
        server_config(&self.control(), role).unwrap()
    }

    /// A certificate signed by this cluster's CA key with arbitrary subject,
    /// SANs and EKU, written as `<stem>.crt/.key` (what a holder of the CA
    /// key, or a buggy tool, could produce).
    fn forge(&self, stem: &str, ou: &str, cn: &str, sans: &[&str], server: bool) -> TlsFiles {
        let ca_key =
            rcgen::KeyPair::from_pem(&fs::read_to_string(&self.info.key_path).unwrap()).unwrap();
        let mut issuer_params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(
            rcgen::DnType::OrganizationalUnitName,
            self.info.cluster_id.to_string(),
        );
        dn.push(rcgen::DnType::CommonName, self.info.name.as_str());
        issuer_params.distinguished_name = dn;
        let issuer = rcgen::Issuer::new(issuer_params, ca_key);

        let key = rcgen::KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationalUnitName, ou);
        dn.push(rcgen::DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(1);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        if server {
            params
                .extended_key_usages
                .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        }
        let cert = params.signed_by(&key, &issuer).unwrap();
        let files = TlsFiles::in_dir(self.path(), stem);
        fs::write(&files.cert, cert.pem()).unwrap();
        fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

#[derive(Debug)]
struct ServerSeen {
    identity: PeerIdentity,
    version: Option<ProtocolVersion>,
    alpn: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Outcome {
    server: Result<ServerSeen, String>,
    client: Result<(), String>,
}

impl Outcome {
    fn accepted(self) -> ServerSeen {
        assert!(self.client.is_ok(), "client failed: {:?}", self.client);
        self.server.expect("server refused")
    }

    /// Refused by the server; returns the server's error.
    fn refused(self) -> String {
        assert!(self.client.is_err(), "client succeeded");
        self.server.expect_err("server accepted")
    }

    /// Refused by the cluster/role check, after the chain verified.
    fn refused_by_role_check(self) {
        let err = self.refused();
        assert!(err.contains("ApplicationVerificationFailure"), "{err}");
    }
}

/// One connection over loopback: handshake, client sends `ping`, server
/// answers `pong`. The client dials 127.0.0.1 (not `control-service`).
async fn exchange(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"ping");
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let seen = ServerSeen {
            identity: connection_peer_identity(conn).map_err(|e| e.to_string())?,
            version: conn.protocol_version(),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        };
        let _ = tls.shutdown().await;
        Ok::<_, String>(seen)
    });
    let connector = TlsConnector::from(client);
    let client = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"pong" {
            return Err(format!("unexpected answer {buf:?}"));
        }
        Ok(())
    };
    let run = async {
        let client = client.await;
        let server = server_task.await.unwrap();
        Outcome { server, client }
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("exchange timed out")
}

fn read_der(path: &Path) -> Vec<u8> {
    let pem = fs::read(path).unwrap();
    CertificateDer::from_pem_slice(&pem).unwrap().to_vec()
}

fn with_cert<T>(path: &Path, f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let der = read_der(path);
    let (rest, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(rest.is_empty());
    f(&cert)
}

fn cn_and_ou(cert: &X509Certificate<'_>) -> (String, String) {
    let subject = cert.subject();
    let cns: Vec<_> = subject.iter_common_name().collect();
    let ous: Vec<_> = subject.iter_organizational_unit().collect();
    assert_eq!(cns.len(), 1);
    assert_eq!(ous.len(), 1);
    (
        cns[0].as_str().unwrap().to_owned(),
        ous[0].as_str().unwrap().to_owned(),
    )
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Some(ext) = cert.subject_alternative_name().unwrap() else {
        return Vec::new();
    };
    assert!(!ext.critical);
    ext.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => format!("DNS:{dns}"),
            GeneralName::IPAddress(octets) => {
                let ip: std::net::IpAddr = match octets.len() {
                    4 => <[u8; 4]>::try_from(*octets).unwrap().into(),
                    16 => <[u8; 16]>::try_from(*octets).unwrap().into(),
                    n => panic!("bad IP length {n}"),
                };
                format!("IP:{ip}")
            }
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

fn eku(cert: &X509Certificate<'_>) -> (bool, bool) {
    let ext = cert.extended_key_usage().unwrap().expect("EKU present");
    (ext.value.server_auth, ext.value.client_auth)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Properties every generated certificate shares.
fn assert_common(cert: &X509Certificate<'_>, ca_cert: &Path) {
    assert_eq!(cert.version(), X509Version::V3);
    assert_eq!(
        cert.signature_algorithm.algorithm,
        OID_SIG_ECDSA_WITH_SHA256
    );
    assert_eq!(
        cert.public_key().algorithm.algorithm,
        OID_KEY_TYPE_EC_PUBLIC_KEY
    );
    match cert.public_key().parsed().unwrap() {
        PublicKey::EC(point) => assert_eq!(point.key_size(), 256),
        other => panic!("not an EC key: {other:?}"),
    }
    let validity = cert.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    assert_eq!(not_after - not_before, 630_720_000);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now - 300..=now + 1).contains(&not_before),
        "{not_before} vs {now}"
    );
    // Positive, non-zero, 128 random bits (one extra leading zero octet
    // when the top bit is set).
    let serial = cert.raw_serial();
    assert!(serial.len() == 16 || (serial.len() == 17 && serial[0] == 0));
    assert!(serial[0] & 0x80 == 0);
    assert!(serial.iter().any(|b| *b != 0));
    // Issuer is the CA subject (signatures are checked by the handshakes).
    let ca_der = read_der(ca_cert);
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert_eq!(cert.issuer().as_raw(), ca.subject().as_raw());
}

fn assert_leaf(cert: &X509Certificate<'_>) {
    let bc = cert.basic_constraints().unwrap().expect("basicConstraints");
    assert!(!bc.value.ca);
    let ku = cert.key_usage().unwrap().expect("keyUsage");
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign());
}

// ---------------------------------------------------------------------------
// Handshakes

#[tokio::test]
async fn user_certificate_accepted_on_api_port() {
    let cluster = Cluster::new("c");
    let alice = cluster.user("alice");
    let seen = exchange(
        cluster.server(PeerRole::ApiUser),
        client_config(&alice).unwrap(),
    )
    .await
    .accepted();
    assert_eq!(seen.identity, PeerIdentity::User("alice".into()));
    assert_eq!(seen.version, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn client_without_alpn_accepted() {
    let cluster = Cluster::new("c");
    let alice = cluster.user("alice");
    let mut client = (*client_config(&alice).unwrap()).clone();
    client.alpn_protocols.clear();
    let seen = exchange(cluster.server(PeerRole::ApiUser), Arc::new(client))
        .await
        .accepted();
    assert_eq!(seen.alpn, None);
}

#[tokio::test]
async fn no_client_certificate_refused() {
    let cluster = Cluster::new("c");
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(read_der(&cluster.info.cert_path)))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // A plain webpki client verifying the server by name; the dialled
    // address is 127.0.0.1, which the control certificate also carries.
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(tls::DEFAULT_VERSIONS)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let err = exchange(cluster.server(PeerRole::ApiUser), Arc::new(client))
        .await
        .refused();
    assert!(err.contains("no certificates"), "{err}");
}

#[tokio::test]
async fn certificate_from_another_ca_refused() {
    let cluster = Cluster::new("c");
    let other = Cluster::new("other");
    let mallory = other.user("mallory");
    // Trusts the right server, but presents a certificate of another CA.
    let files = TlsFiles {
        ca_cert: cluster.info.cert_path.clone(),
        ..mallory
    };
    let err = exchange(
        cluster.server(PeerRole::ApiUser),
        client_config(&files).unwrap(),
    )
    .await
    .refused();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn certificate_with_foreign_ou_signed_by_cluster_ca_refused() {
    let cluster = Cluster::new("c");
    let other_cluster = Uuid::new_v4().to_string();
    let files = cluster.forge("mallory", &other_cluster, "user-mallory", &[], false);
    exchange(
        cluster.server(PeerRole::ApiUser),
        client_config(&files).unwrap(),
    )
    .await
    .refused_by_role_check();
}

#[tokio::test]
async fn malformed_node_common_name_refused_on_node_port() {
    let cluster = Cluster::new("c");
    let ou = cluster.info.cluster_id.to_string();
    let files = cluster.forge("bad", &ou, "node-not-a-uuid", &[], false);
    exchange(
        cluster.server(PeerRole::Node),
        client_config(&files).unwrap(),
    )
    .await
    .refused_by_role_check();
}

#[tokio::test]
async fn node_certificate_refused_on_api_port() {
    let cluster = Cluster::new("c");
    let (_, node) = cluster.node();
    exchange(
        cluster.server(PeerRole::ApiUser),
        client_config(&node).unwrap(),
    )
    .await
    .refused_by_role_check();
}

#[tokio::test]
async fn user_certificate_refused_on_node_port() {
    let cluster = Cluster::new("c");
    let alice = cluster.user("alice");
    exchange(
        cluster.server(PeerRole::Node),
        client_config(&alice).unwrap(),
    )
    .await
    .refused_by_role_check();
}

#[tokio::test]
async fn node_certificate_accepted_on_node_port_with_its_uuid() {
    let cluster = Cluster::new("c");
    let (id, node) = cluster.node();
    let seen = exchange(
        cluster.server(PeerRole::Node),
        client_config(&node).unwrap(),
    )
    .await
    .accepted();
    assert_eq!(seen.identity, PeerIdentity::Node(id));
    // And directly from the certificate file.
    let der = CertificateDer::from(read_der(&node.cert));
    assert_eq!(peer_identity(&der).unwrap(), PeerIdentity::Node(id));
}

#[tokio::test]
async fn control_certificate_accepted_on_peer_port_refused_on_api_port() {
    let cluster = Cluster::new("c");
    // Another control node of the same cluster with its own certificate.
    let peer =
        ca::create_control_certificate(cluster.path(), cluster.path(), "10.0.0.2", &[]).unwrap();
    let files = TlsFiles {
        ca_cert: cluster.info.cert_path.clone(),
        cert: peer.cert_path,
        key: peer.key_path,
    };
    let seen = exchange(
        cluster.server(PeerRole::ControlService),
        client_config(&files).unwrap(),
    )
    .await
    .accepted();
    assert_eq!(seen.identity, PeerIdentity::ControlService);
    exchange(
        cluster.server(PeerRole::ApiUser),
        client_config(&files).unwrap(),
    )
    .await
    .refused_by_role_check();
}

#[tokio::test]
async fn user_certificate_refused_on_peer_port() {
    let cluster = Cluster::new("c");
    let alice = cluster.user("alice");
    exchange(
        cluster.server(PeerRole::ControlService),
        client_config(&alice).unwrap(),
    )
    .await
    .refused_by_role_check();
}

#[tokio::test]
async fn tls12_only_client_connects() {
    let cluster = Cluster::new("c");
    let alice = cluster.user("alice");
    let client = client_config_for_versions(&alice, &[&rustls::version::TLS12]).unwrap();
    let seen = exchange(cluster.server(PeerRole::ApiUser), client)
        .await
        .accepted();
    assert_eq!(seen.version, Some(ProtocolVersion::TLSv1_2));
    assert_eq!(seen.identity, PeerIdentity::User("alice".into()));
}

#[tokio::test]
async fn tls12_only_client_with_wrong_role_refused() {
    let cluster = Cluster::new("c");
    let (_, node) = cluster.node();
    let client = client_config_for_versions(&node, &[&rustls::version::TLS12]).unwrap();
    exchange(cluster.server(PeerRole::ApiUser), client)
        .await
        .refused_by_role_check();
}

#[tokio::test]
async fn client_rejects_server_of_another_ca() {
    let cluster = Cluster::new("c");
    let other = Cluster::new("other");
    let alice = cluster.user("alice");
    // The impostor server trusts alice's CA for client certificates but
    // presents its own cluster's control certificate.
    let impostor = TlsFiles {
        ca_cert: cluster.info.cert_path.clone(),
        ..other.control()
    };
    let outcome = exchange(
        server_config(&impostor, PeerRole::ApiUser).unwrap(),
        client_config(&alice).unwrap(),
    )
    .await;
    let err = outcome.client.expect_err("client accepted an impostor");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(outcome.server.is_err());
}

#[tokio::test]
async fn client_rejects_server_without_control_service_name() {
    let cluster = Cluster::new("c");
    let alice = cluster.user("alice");
    let ou = cluster.info.cluster_id.to_string();

    // A user certificate of the right CA: it chains, but lacks serverAuth.
    let bob = cluster.user("bob");
    let server = server_config(&bob, PeerRole::ApiUser).unwrap();
    let outcome = exchange(server, client_config(&alice).unwrap()).await;
    let err = outcome.client.expect_err("client accepted");
    assert!(err.contains("server authentication"), "{err}");

    // A control-service subject with serverAuth, but without the name
    // control-service in its subjectAltName (only the dialled address).
    let files = cluster.forge("noname", &ou, "control-service", &["127.0.0.1"], true);
    let server = server_config(&files, PeerRole::ApiUser).unwrap();
    let outcome = exchange(server, client_config(&alice).unwrap()).await;
    let err = outcome.client.expect_err("client accepted");
    assert!(err.contains("not valid for name"), "{err}");

    // Valid for control-service, but its subject is a user's.
    let files = cluster.forge("imposter", &ou, "user-eve", &["control-service"], true);
    let server = server_config(&files, PeerRole::ApiUser).unwrap();
    let outcome = exchange(server, client_config(&alice).unwrap()).await;
    let err = outcome.client.expect_err("client accepted");
    assert!(err.contains("ApplicationVerificationFailure"), "{err}");
}

#[test]
fn peer_identity_of_each_kind() {
    let cluster = Cluster::new("c");
    let der = |p: &Path| CertificateDer::from(read_der(p));
    assert_eq!(
        peer_identity(&der(&cluster.control().cert)).unwrap(),
        PeerIdentity::ControlService
    );
    assert_eq!(
        peer_identity(&der(&cluster.user("alice").cert)).unwrap(),
        PeerIdentity::User("alice".into())
    );
    // The CA certificate is no peer.
    assert!(peer_identity(&der(&cluster.info.cert_path)).is_err());
    assert!(peer_identity(&CertificateDer::from(vec![1, 2, 3])).is_err());
}

#[test]
fn tls_errors_name_the_file() {
    let cluster = Cluster::new("c");
    let missing = TlsFiles::in_dir(cluster.path(), "nobody");
    let err = client_config(&missing).unwrap_err().to_string();
    assert!(err.contains("nobody.crt"), "{err}");
    fs::write(cluster.path().join("garbage.crt"), "not pem").unwrap();
    fs::write(cluster.path().join("garbage.key"), "not pem").unwrap();
    let garbage = TlsFiles::in_dir(cluster.path(), "garbage");
    let err = server_config(&garbage, PeerRole::Node)
        .unwrap_err()
        .to_string();
    assert!(err.contains("garbage.crt"), "{err}");
    // Certificate of one pair, key of another.
    let alice = cluster.user("alice");
    let bob = cluster.user("bob");
    let mixed = TlsFiles {
        key: bob.key,
        ..alice
    };
    let err = client_config(&mixed).unwrap_err().to_string();
    assert!(
        err.contains("alice.crt") && err.contains("bob.key"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Certificate authority

#[test]
fn initialize_writes_ca_files() {
    let dir = tempfile::tempdir().unwrap();
    let info = ca::initialize(dir.path(), "my cluster").unwrap();
    assert_eq!(info.cert_path, dir.path().join("cluster.crt"));
    assert_eq!(info.key_path, dir.path().join("cluster.key"));
    assert_eq!(info.name, "my cluster");
    assert_eq!(mode(&info.cert_path), 0o600);
    assert_eq!(mode(&info.key_path), 0o600);
    let key = fs::read_to_string(&info.key_path).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(fs::read_to_string(&info.cert_path)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        ca::load_cluster_id(&info.cert_path).unwrap(),
        info.cluster_id
    );
    assert_eq!(info.cluster_id.get_version_num(), 4);

    with_cert(&info.cert_path, |cert| {
        assert_common(cert, &info.cert_path);
        assert_eq!(
            cn_and_ou(cert),
            ("my cluster".to_owned(), info.cluster_id.to_string())
        );
        assert_eq!(cert.subject().as_raw(), cert.issuer().as_raw());
        let bc = cert.basic_constraints().unwrap().expect("basicConstraints");
        assert!(bc.critical);
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = cert.key_usage().unwrap().expect("keyUsage");
        assert!(ku.critical);
        assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
        assert!(!ku.value.digital_signature());
        let ski = cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
            .expect("subjectKeyIdentifier");
        let aki = cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .expect("authorityKeyIdentifier");
        assert_eq!(ski, aki);
    });
}

#[test]
fn control_certificate_with_ip_hostname() {
    let dir = tempfile::tempdir().unwrap();
    let info = ca::initialize(dir.path(), "c").unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = ca::create_control_certificate(
        dir.path(),
        out.path(),
        "10.1.2.3",
        &["ctl.example.com".to_owned(), "fd00::1".to_owned()],
    )
    .unwrap();
    assert_eq!(files.cert_path, out.path().join("control-10.1.2.3.crt"));
    assert_eq!(files.key_path, out.path().join("control-10.1.2.3.key"));
    assert_eq!(mode(&files.cert_path), 0o600);
    assert_eq!(mode(&files.key_path), 0o600);
    with_cert(&files.cert_path, |cert| {
        assert_common(cert, &info.cert_path);
        assert_leaf(cert);
        assert_eq!(
            cn_and_ou(cert),
            ("control-service".to_owned(), info.cluster_id.to_string())
        );
        assert_eq!(
            sans(cert),
            [
                "DNS:control-service",
                "IP:10.1.2.3",
                "DNS:ctl.example.com",
                "IP:fd00::1"
            ]
        );
        assert_eq!(eku(cert), (true, true));
    });
}

#[test]
fn control_certificate_with_dns_hostname() {
    let dir = tempfile::tempdir().unwrap();
    ca::initialize(dir.path(), "c").unwrap();
    let files =
        ca::create_control_certificate(dir.path(), dir.path(), "ctl.example.com", &[]).unwrap();
    assert_eq!(
        files.cert_path,
        dir.path().join("control-ctl.example.com.crt")
    );
    with_cert(&files.cert_path, |cert| {
        assert_eq!(sans(cert), ["DNS:control-service", "DNS:ctl.example.com"]);
    });
    let err = ca::create_control_certificate(dir.path(), dir.path(), "a/b", &[]).unwrap_err();
    assert!(matches!(err, CaError::InvalidHostname(_)), "{err}");
}

#[test]
fn node_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let info = ca::initialize(dir.path(), "c").unwrap();
    let id = ca::create_node_certificate(dir.path(), dir.path()).unwrap();
    assert_eq!(id.get_version_num(), 4);
    let crt = dir.path().join(format!("{id}.crt"));
    let key = dir.path().join(format!("{id}.key"));
    assert_eq!(mode(&crt), 0o600);
    assert_eq!(mode(&key), 0o600);
    with_cert(&crt, |cert| {
        assert_common(cert, &info.cert_path);
        assert_leaf(cert);
        assert_eq!(
            cn_and_ou(cert),
            (format!("node-{id}"), info.cluster_id.to_string())
        );
        assert_eq!(eku(cert), (false, true));
        assert!(sans(cert).is_empty());
    });
    let other = ca::create_node_certificate(dir.path(), dir.path()).unwrap();
    assert_ne!(id, other);
    let serial = |p: &Path| with_cert(p, |c| c.raw_serial().to_vec());
    assert_ne!(
        serial(&crt),
        serial(&dir.path().join(format!("{other}.crt")))
    );
}

#[test]
fn api_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let info = ca::initialize(dir.path(), "c").unwrap();
    let files = ca::create_api_certificate(dir.path(), dir.path(), "alice").unwrap();
    assert_eq!(files.cert_path, dir.path().join("alice.crt"));
    assert_eq!(files.key_path, dir.path().join("alice.key"));
    assert_eq!(mode(&files.cert_path), 0o600);
    assert_eq!(mode(&files.key_path), 0o600);
    with_cert(&files.cert_path, |cert| {
        assert_common(cert, &info.cert_path);
        assert_leaf(cert);
        assert_eq!(
            cn_and_ou(cert),
            ("user-alice".to_owned(), info.cluster_id.to_string())
        );
        assert_eq!(eku(cert), (false, true));
    });
}

#[test]
fn existing_files_are_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    ca::initialize(dir.path(), "c").unwrap();
    let before = fs::read(dir.path().join("cluster.crt")).unwrap();

    let err = ca::initialize(dir.path(), "again").unwrap_err();
    let path = dir.path().join("cluster.crt");
    assert_eq!(
        err.to_string(),
        format!(
            "Unable to write certificate file. File exists (os error 17) {}",
            path.display()
        )
    );
    assert_eq!(fs::read(&path).unwrap(), before);

    ca::create_api_certificate(dir.path(), dir.path(), "alice").unwrap();
    let err = ca::create_api_certificate(dir.path(), dir.path(), "alice").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Unable to write certificate file. File exists (os error 17) {}",
            dir.path().join("alice.crt").display()
        )
    );

    fs::write(dir.path().join("bob.key"), "mine").unwrap();
    let err = ca::create_api_certificate(dir.path(), dir.path(), "bob").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Unable to write private key file. File exists (os error 17) {}",
            dir.path().join("bob.key").display()
        )
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("bob.key")).unwrap(),
        "mine"
    );
}

#[test]
fn missing_ca_error_text() {
    let dir = tempfile::tempdir().unwrap();
    let expected = format!(
        "Unable to load certificate authority file. Please run `flocker-ca initialize` to generate a new certificate authority. No such file or directory (os error 2) {}",
        dir.path().join("cluster.crt").display()
    );
    let err = ca::create_node_certificate(dir.path(), dir.path()).unwrap_err();
    assert_eq!(err.to_string(), expected);
    let err = ca::create_api_certificate(dir.path(), dir.path(), "alice").unwrap_err();
    assert_eq!(err.to_string(), expected);
    let err = ca::create_control_certificate(dir.path(), dir.path(), "h", &[]).unwrap_err();
    assert_eq!(err.to_string(), expected);
    let err = ca::load_cluster_id(&dir.path().join("cluster.crt")).unwrap_err();
    assert_eq!(err.to_string(), expected);

    // Certificate present, key missing: the key file is named.
    let other = tempfile::tempdir().unwrap();
    ca::initialize(other.path(), "c").unwrap();
    fs::copy(
        other.path().join("cluster.crt"),
        dir.path().join("cluster.crt"),
    )
    .unwrap();
    let err = ca::create_node_certificate(dir.path(), dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Unable to load certificate authority file. Please run `flocker-ca initialize` to generate a new certificate authority. No such file or directory (os error 2) {}",
            dir.path().join("cluster.key").display()
        )
    );
    // Nothing was written.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

// ---------------------------------------------------------------------------
// The flocker-ca binary

fn flocker_ca(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flocker-ca"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn binary_initialize_and_create() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();

    let out = flocker_ca(cwd, &["initialize", "mycluster"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "Created cluster.key and cluster.crt. Please keep cluster.key secret, as anyone who can access it will be able to control your cluster.\n"
    );
    assert!(cwd.join("cluster.crt").exists() && cwd.join("cluster.key").exists());

    let out = flocker_ca(cwd, &["create-api-certificate", "alice"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "Created alice.crt. You can now give it to your API enduser so they can access the control service API.\n"
    );
    assert_eq!(mode(&cwd.join("alice.key")), 0o600);

    // Input and output directories; compatibility options are accepted.
    let out_dir = tempfile::tempdir().unwrap();
    let cwd_str = cwd.to_str().unwrap();
    let out_str = out_dir.path().to_str().unwrap();
    let out = flocker_ca(
        out_dir.path(),
        &[
            "-v",
            "--journald",
            "create-control-certificate",
            "-i",
            cwd_str,
            "--outputpath",
            out_str,
            "--logfile",
            "/dev/null",
            "192.0.2.7",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("Created control-192.0.2.7.crt and control-192.0.2.7.key")
    );
    let advice = lines.next().unwrap();
    for needle in [
        "/etc/flocker",
        "control-service.crt",
        "control-service.key",
        "chmod 0600",
    ] {
        assert!(advice.contains(needle), "{advice}");
    }
    let crt = out_dir.path().join("control-192.0.2.7.crt");
    with_cert(&crt, |cert| {
        assert_eq!(sans(cert), ["DNS:control-service", "IP:192.0.2.7"]);
    });

    let out = flocker_ca(
        cwd,
        &["create-node-certificate", "--inputpath", ".", "-o", out_str],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let id = text
        .strip_prefix("Created ")
        .and_then(|t| t.split_once(".crt."))
        .map(|(id, _)| id.to_owned())
        .unwrap();
    let id = Uuid::parse_str(&id).unwrap();
    assert_eq!(
        text,
        format!("Created {id}.crt. Copy it over to /etc/flocker/node.crt on your node machine and make sure to chmod 0600 it.\n")
    );
    assert!(out_dir.path().join(format!("{id}.key")).exists());

    // Failure: existing file.
    let out = flocker_ca(cwd, &["create-api-certificate", "alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let alice_crt: PathBuf = fs::canonicalize(cwd).unwrap().join("alice.crt");
    assert_eq!(
        stderr(&out),
        format!(
            "Error: Unable to write certificate file. File exists (os error 17) {}\n",
            alice_crt.display()
        )
    );
}

#[test]
fn binary_missing_ca_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = flocker_ca(dir.path(), &["create-node-certificate"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let cluster_crt = fs::canonicalize(dir.path()).unwrap().join("cluster.crt");
    assert_eq!(
        stderr(&out),
        format!(
            "Error: Unable to load certificate authority file. Please run `flocker-ca initialize` to generate a new certificate authority. No such file or directory (os error 2) {}\n",
            cluster_crt.display()
        )
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

    let out = flocker_ca(dir.path(), &["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("flocker-ca "), "{}", stdout(&out));

    let out = flocker_ca(dir.path(), &["no-such-command"]);
    assert_eq!(out.status.code(), Some(1));

    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(env!("CARGO_BIN_EXE_flocker-ca"))
        .arg("create-api-certificate")
        .arg(std::ffi::OsStr::from_bytes(b"bad\xff"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error: Invalid username: Could not be converted to UTF-8\n"
    );
}
