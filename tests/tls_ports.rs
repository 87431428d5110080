//! Who may talk to which port of a running control node, with real certificates from
//! `flocker::ca` and real TLS handshakes over loopback.
//!
//! Refusals are checked on a raw `tokio_rustls` connection so that the test can tell who
//! refused and why: the server refusing a client certificate shows up at the client as a
//! TLS alert it *received* (`certificate_required`, `unknown_ca`, `access_denied` for a
//! certificate of the wrong role), never as an HTTP response, whereas a client that
//! distrusts the server fails locally. Every refusal test also checks that the
//! same client machinery with the right certificate gets a 200, so a refusal cannot come
//! from a broken test client.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Pki, Single};
use flocker::client::Client;
use flocker::tls::{client_config, client_config_for_versions, TlsFiles};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{AlertDescription, ClientConfig, ProtocolVersion, RootCertStore};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What became of one HTTPS request. (The reasons are read through `Debug`, in failure
/// messages.)
#[derive(Debug)]
#[allow(dead_code)]
enum Attempt {
    /// An HTTP response: the negotiated TLS version and the response head and body.
    Answered {
        version: Option<ProtocolVersion>,
        response: String,
    },
    /// The server refused the connection with this TLS alert.
    Refused(AlertDescription),
    /// The server hung up without a response or an alert.
    HungUp(String),
    /// The client gave up on its own (e.g. it did not trust the server).
    ClientFailed(String),
}

impl Attempt {
    fn status_line(&self) -> &str {
        match self {
            Attempt::Answered { response, .. } => response.lines().next().unwrap_or_default(),
            other => panic!("expected an HTTP response, got {other:?}"),
        }
    }

    /// The server refused the handshake with `alert`: no HTTP response was sent.
    fn assert_refused(&self, alert: AlertDescription, who: &str) {
        assert!(
            matches!(self, Attempt::Refused(a) if *a == alert),
            "{who}: expected the server to refuse with {alert:?}, got {self:?}"
        );
    }
}

fn classify(e: std::io::Error) -> Attempt {
    use std::io::ErrorKind::*;
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => Attempt::Refused(*alert),
        Some(other) => Attempt::ClientFailed(other.to_string()),
        None if matches!(e.kind(), UnexpectedEof | ConnectionReset | BrokenPipe) => {
            Attempt::HungUp(e.to_string())
        }
        None => Attempt::ClientFailed(e.to_string()),
    }
}

/// `GET path` over a fresh TLS connection made with `config`.
async fn attempt(addr: SocketAddr, config: Arc<ClientConfig>, path: &str) -> Attempt {
    let deadline = Duration::from_secs(10);
    let tcp = TcpStream::connect(addr)
        .await
        .expect("the port accepts TCP");
    let name = ServerName::try_from("control-service").unwrap();
    let handshake = TlsConnector::from(config).connect(name, tcp);
    let mut tls = match tokio::time::timeout(deadline, handshake)
        .await
        .expect("the handshake finishes or fails in time")
    {
        Ok(tls) => tls,
        Err(e) => return classify(e),
    };
    let version = tls.get_ref().1.protocol_version();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: control-service\r\nConnection: close\r\n\r\n");
    if let Err(e) = tls.write_all(request.as_bytes()).await {
        return classify(e);
    }
    let mut response = Vec::new();
    let read = tokio::time::timeout(deadline, tls.read_to_end(&mut response))
        .await
        .expect("the server answers or hangs up in time");
    match read {
        // A peer that closes without close_notify still delivered its response.
        _ if !response.is_empty() => Attempt::Answered {
            version,
            response: String::from_utf8_lossy(&response).into_owned(),
        },
        Err(e) => classify(e),
        Ok(_) => Attempt::HungUp("closed without a response".to_owned()),
    }
}

fn cluster_roots(pki: &Pki) -> RootCertStore {
    let pem = std::fs::read(pki.dir.join("cluster.crt")).unwrap();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// A client that trusts the cluster CA but has no certificate of its own.
fn anonymous_config(pki: &Pki) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(cluster_roots(pki))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The certificate and key of `stem` in `cert_dir`, trusting the CA of `trust`.
fn files(trust: &Pki, cert_dir: &Pki, stem: &str) -> TlsFiles {
    TlsFiles {
        ca_cert: trust.dir.join("cluster.crt"),
        ..TlsFiles::in_dir(&cert_dir.dir, stem)
    }
}

// A client that presents no certificate never gets an HTTP response from the API port,
// over raw TLS or through reqwest.
#[tokio::test]
async fn api_port_refuses_clients_without_a_certificate() {
    let s = Single::start().await;
    let anonymous = anonymous_config(&s.pki);
    attempt(s.control.api_addr, anonymous.clone(), "/v1/version")
        .await
        .assert_refused(
            AlertDescription::CertificateRequired,
            "no client certificate",
        );

    // The same through an HTTP client library; the server certificate names 127.0.0.1,
    // so ordinary hostname verification passes and only the missing certificate fails.
    let http = reqwest::Client::builder()
        .use_preconfigured_tls((*anonymous).clone())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://{}/v1/version", s.control.api_addr);
    let result = http.get(&url).send().await;
    assert!(result.is_err(), "no client certificate: {result:?}");

    let user = client_config(&s.pki.user()).unwrap();
    let answered = attempt(s.control.api_addr, user, "/v1/version").await;
    assert_eq!(answered.status_line(), "HTTP/1.1 200 OK");
    s.control.stop().await;
}

// A user certificate issued by another cluster's CA is refused by the API port, even
// with the same user name.
#[tokio::test]
async fn api_port_refuses_user_certificates_of_another_cluster() {
    let s = Single::start().await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::create(other_dir.path(), 0);
    // Trust our cluster (so the client accepts the server) but present the other
    // cluster's "user-alice".
    let foreign = client_config(&files(&s.pki, &other, "alice")).unwrap();
    attempt(s.control.api_addr, foreign, "/v1/version")
        .await
        .assert_refused(AlertDescription::UnknownCA, "another cluster's user");

    let client = Client::new(
        &format!("https://{}", s.control.api_addr),
        &files(&s.pki, &other, "alice"),
    )
    .unwrap();
    let result = client.get("/v1/version").await;
    assert!(result.is_err(), "foreign user certificate: {result:?}");
    s.control.stop().await;
}

// Certificates of this cluster for other roles (a node agent, the control service
// itself) are refused by the API port; the user certificate is admitted.
#[tokio::test]
async fn api_port_admits_only_user_certificates() {
    let s = Single::start().await;
    let node = client_config(&s.pki.node(0)).unwrap();
    attempt(s.control.api_addr, node, "/v1/version")
        .await
        .assert_refused(AlertDescription::AccessDenied, "node certificate");
    let control = client_config(&s.pki.control()).unwrap();
    attempt(s.control.api_addr, control, "/v1/version")
        .await
        .assert_refused(
            AlertDescription::AccessDenied,
            "control-service certificate",
        );
    for files in [s.pki.node(0), s.pki.control()] {
        let client = Client::new(&format!("https://{}", s.control.api_addr), &files).unwrap();
        let result = client.get("/v1/version").await;
        assert!(result.is_err(), "{files:?}: {result:?}");
    }

    let user = client_config(&s.pki.user()).unwrap();
    let answered = attempt(s.control.api_addr, user, "/v1/configuration/datasets").await;
    assert_eq!(answered.status_line(), "HTTP/1.1 200 OK");
    let r = s.client.get("/v1/configuration/datasets").await.unwrap();
    assert_eq!(r.status, reqwest::StatusCode::OK);
    assert_eq!(r.body, serde_json::json!([]));
    s.control.stop().await;
}

// The agent port refuses user and control-service certificates and admits node
// certificates, answering for the node the certificate names.
#[tokio::test]
async fn agent_port_admits_only_node_certificates() {
    let s = Single::start().await;
    let agent_addr = s.control.agent_addr;
    let user = client_config(&s.pki.user()).unwrap();
    attempt(agent_addr, user, "/agent/v1/cluster")
        .await
        .assert_refused(AlertDescription::AccessDenied, "user certificate");
    let control = client_config(&s.pki.control()).unwrap();
    attempt(agent_addr, control, "/agent/v1/cluster")
        .await
        .assert_refused(
            AlertDescription::AccessDenied,
            "control-service certificate",
        );
    attempt(agent_addr, anonymous_config(&s.pki), "/agent/v1/cluster")
        .await
        .assert_refused(AlertDescription::CertificateRequired, "no certificate");
    let as_user = Client::new(&format!("https://{agent_addr}"), &s.pki.user()).unwrap();
    let result = as_user.get("/agent/v1/cluster").await;
    assert!(result.is_err(), "user on the agent port: {result:?}");

    let node = client_config(&s.pki.node(0)).unwrap();
    let answered = attempt(agent_addr, node, "/agent/v1/cluster").await;
    assert_eq!(answered.status_line(), "HTTP/1.1 200 OK");
    let r = s.agent_client(1).get("/agent/v1/cluster").await.unwrap();
    assert_eq!(r.status, reqwest::StatusCode::OK);
    assert_eq!(r.body["node_uuid"], s.pki.nodes[1].to_string());
    s.control.stop().await;
}

// A client limited to TLS 1.2 (like Flocker's Python 2.7 clients) negotiates TLS 1.2 and
// is served on the API port; with a node certificate it is refused just the same.
#[tokio::test]
async fn tls12_only_clients_work_on_the_api_port() {
    let s = Single::start().await;
    let tls12 = [&rustls::version::TLS12];
    let user = client_config_for_versions(&s.pki.user(), &tls12).unwrap();
    let answered = attempt(s.control.api_addr, user.clone(), "/v1/version").await;
    assert_eq!(answered.status_line(), "HTTP/1.1 200 OK");
    assert!(
        matches!(
            answered,
            Attempt::Answered {
                version: Some(ProtocolVersion::TLSv1_2),
                ..
            }
        ),
        "{answered:?}"
    );

    let http = reqwest::Client::builder()
        .use_preconfigured_tls((*user).clone())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://{}/v1/configuration/datasets", s.control.api_addr);
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(response.headers().contains_key("x-configuration-tag"));

    let node = client_config_for_versions(&s.pki.node(0), &tls12).unwrap();
    attempt(s.control.api_addr, node, "/v1/version")
        .await
        .assert_refused(AlertDescription::AccessDenied, "TLS 1.2 node certificate");
    s.control.stop().await;
}

// The default client negotiates TLS 1.3 with the API port (so the TLS 1.2 test above
// really exercises a downgrade).
#[tokio::test]
async fn default_clients_negotiate_tls13() {
    let s = Single::start().await;
    let user = client_config(&s.pki.user()).unwrap();
    let answered = attempt(s.control.api_addr, user, "/v1/version").await;
    assert_eq!(answered.status_line(), "HTTP/1.1 200 OK");
    assert!(
        matches!(
            answered,
            Attempt::Answered {
                version: Some(ProtocolVersion::TLSv1_3),
                ..
            }
        ),
        "{answered:?}"
    );
    s.control.stop().await;
}
