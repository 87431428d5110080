//! Certificate authority: the library behind `flocker-ca` (and behind the
//! programmatic cluster set-up of `flocker-cluster`).
//!
//! A Flocker cluster has exactly one certificate authority, `cluster.crt` /
//! `cluster.key`. Its subject is `CN=<cluster name>, OU=<cluster UUID>`; every
//! certificate it issues carries the same `OU`, which is how a certificate
//! names the cluster it belongs to. Three kinds of leaf certificate exist
//! (FLOCKER-SPEC §8.2):
//!
//! | kind | subject CN | extended key usage | files |
//! |---|---|---|---|
//! | control service | `control-service` | serverAuth, clientAuth | `control-<hostname>.crt/.key` |
//! | node agent | `node-<node UUID>` | clientAuth | `<node UUID>.crt/.key` |
//! | API user | `user-<username>` | clientAuth | `<username>.crt/.key` |
//!
//! The control certificate also carries the subjectAltNames
//! `DNS:control-service` plus the hostname (DNS or IP) and any extra names:
//! clients verify the server against the name `control-service` whatever
//! address they dialled, so every control node of a highly-available
//! cluster can present its own certificate with the same name. Control
//! certificates have clientAuth too because control nodes authenticate each
//! other with them on the peer port.
//!
//! # Deliberate differences from the original tool
//!
//! * **Version 3.** The original wrote X.509 v1 certificates with v3
//!   extensions; rustls/webpki rejects anything but v3, so every certificate
//!   here is a proper v3 certificate.
//! * **ECDSA P-256 with SHA-256** instead of RSA-4096. Reasons: `rcgen`
//!   (with the `ring` backend used by this crate) cannot generate RSA keys at
//!   all; rustls and ring support P-256 natively in both TLS 1.2
//!   (`ECDHE-ECDSA-AES*-GCM`) and TLS 1.3; key generation takes microseconds
//!   instead of seconds for RSA-4096, and handshakes are cheaper; and
//!   ECDSA P-256 certificates are accepted by every client we care about
//!   (Go's `crypto/tls`, curl, Python's `ssl`/pyOpenSSL over TLS 1.2).
//! * Leaf certificates carry an explicit `basicConstraints CA:FALSE`, a
//!   subjectKeyIdentifier, an authorityKeyIdentifier, a `digitalSignature`
//!   key usage and an extended key usage, so that strict verifiers (webpki,
//!   OpenSSL, Go) accept them for exactly the role they were issued for.
//!
//! # Common properties
//!
//! Random positive 128-bit serial numbers; validity from "now" for
//! 630 720 000 s (20 × 365 days); issuer = the CA subject; PEM files (PKCS#8
//! keys) written with mode 0600 by exclusive create (an existing file is an
//! error and is left untouched), the certificate before the key. If the key
//! cannot be written, the certificate file just created is removed again so
//! a retry does not trip over a half-written pair.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use x509_parser::asn1_rs::Tag;
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::X509Name;

/// File name of the certificate authority's certificate.
pub const CA_CERT_FILE: &str = "cluster.crt";
/// File name of the certificate authority's private key.
pub const CA_KEY_FILE: &str = "cluster.key";
/// Common name of every control-service certificate, and the name clients
/// verify the server certificate against.
pub const CONTROL_SERVICE_NAME: &str = "control-service";
/// Prefix of the common name of node certificates.
pub const NODE_CN_PREFIX: &str = "node-";
/// Prefix of the common name of API user certificates.
pub const USER_CN_PREFIX: &str = "user-";
/// Validity period of every certificate: 20 × 365 days, in seconds.
pub const VALIDITY_SECONDS: i64 = 630_720_000;

/// Errors of the certificate authority. `Display` is the text the
/// `flocker-ca` tool prints after `Error: `.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// `cluster.crt` or `cluster.key` could not be read or parsed.
    #[error(
        "Unable to load certificate authority file. Please run `flocker-ca initialize` to generate a new certificate authority. {reason} {}",
        path.display()
    )]
    LoadAuthority { reason: String, path: PathBuf },
    /// A certificate file could not be created (typically: it already exists).
    #[error("Unable to write certificate file. {reason} {}", path.display())]
    WriteCertificate { reason: String, path: PathBuf },
    /// A private key file could not be created (typically: it already exists).
    #[error("Unable to write private key file. {reason} {}", path.display())]
    WriteKey { reason: String, path: PathBuf },
    /// A hostname or subjectAltName is neither an IP address nor a DNS name.
    #[error("Invalid hostname: {0:?} is neither an IP address nor a valid DNS name")]
    InvalidHostname(String),
    /// A username cannot be used in a certificate or as a file name.
    #[error("Invalid username: {0}")]
    InvalidUsername(String),
    /// A cluster name cannot be used as a certificate subject.
    #[error("Invalid cluster name: {0}")]
    InvalidName(String),
    /// A certificate file exists but is not a usable Flocker certificate.
    #[error("Invalid certificate file {}: {reason}", path.display())]
    InvalidCertificate { reason: String, path: PathBuf },
    /// Key or certificate generation failed.
    #[error("Unable to generate certificate: {0}")]
    Generate(String),
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Generate(e.to_string())
    }
}

/// The result of [`initialize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInfo {
    /// The new cluster UUID (the OU of every certificate of this cluster).
    pub cluster_id: Uuid,
    /// The cluster name (CN of the CA certificate).
    pub name: String,
    /// Path of the written `cluster.crt`.
    pub cert_path: PathBuf,
    /// Path of the written `cluster.key`.
    pub key_path: PathBuf,
}

/// The pair of files written for a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// Path of the written certificate (PEM).
    pub cert_path: PathBuf,
    /// Path of the written private key (PEM, PKCS#8).
    pub key_path: PathBuf,
}

/// The names in a certificate's subject that Flocker uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectNames {
    /// The single commonName, if there is exactly one.
    pub common_name: Option<String>,
    /// The single organizationalUnitName, if there is exactly one.
    pub organizational_unit: Option<String>,
}

/// Create a new certificate authority in `dir`: writes `cluster.crt` then
/// `cluster.key`. The subject is `CN=<name>, OU=<new random cluster UUID>`.
pub fn initialize(dir: &Path, name: &str) -> Result<CaInfo, CaError> {
    if name.is_empty() || name.contains('\0') {
        return Err(CaError::InvalidName(format!(
            "{name:?} cannot be used as a certificate common name"
        )));
    }
    let cluster_id = Uuid::new_v4();
    let key = new_key()?;
    let mut params = base_params(cluster_id, name)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    let cert = params.self_signed(&key)?;

    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    write_pair(&cert_path, &cert.pem(), &key_path, &key.serialize_pem())?;
    Ok(CaInfo {
        cluster_id,
        name: name.to_owned(),
        cert_path,
        key_path,
    })
}

/// Create a control-service certificate signed by the CA in `input`, written
/// to `output` as `control-<hostname>.crt` / `.key`.
///
/// Subject `CN=control-service, OU=<cluster UUID>`; subjectAltName
/// `DNS:control-service`, then `hostname` and each of `extra_sans` as `IP:`
/// if it parses as an IP address and `DNS:` otherwise (duplicates dropped);
/// extended key usage serverAuth and clientAuth.
pub fn create_control_certificate(
    input: &Path,
    output: &Path,
    hostname: &str,
    extra_sans: &[String],
) -> Result<CertificateFiles, CaError> {
    let mut sans = vec![SanType::DnsName(CONTROL_SERVICE_NAME.try_into()?)];
    for name in std::iter::once(hostname).chain(extra_sans.iter().map(String::as_str)) {
        let san = subject_alt_name(name)?;
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    let authority = Authority::load(input)?;
    issue(
        &authority,
        CONTROL_SERVICE_NAME,
        sans,
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        output,
        &format!("control-{hostname}"),
    )
}

/// Create a node certificate for a new random node UUID, signed by the CA in
/// `input`, written to `output` as `<uuid>.crt` / `<uuid>.key`. Returns the
/// node UUID.
pub fn create_node_certificate(input: &Path, output: &Path) -> Result<Uuid, CaError> {
    let node_id = Uuid::new_v4();
    create_node_certificate_with_id(input, output, node_id)?;
    Ok(node_id)
}

/// Like [`create_node_certificate`] but for a given node UUID (used when a
/// whole cluster is laid out programmatically).
pub fn create_node_certificate_with_id(
    input: &Path,
    output: &Path,
    node_id: Uuid,
) -> Result<CertificateFiles, CaError> {
    let authority = Authority::load(input)?;
    issue(
        &authority,
        &format!("{NODE_CN_PREFIX}{node_id}"),
        Vec::new(),
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        output,
        &node_id.to_string(),
    )
}

/// Create an API user certificate `CN=user-<username>`, signed by the CA in
/// `input`, written to `output` as `<username>.crt` / `<username>.key`.
pub fn create_api_certificate(
    input: &Path,
    output: &Path,
    username: &str,
) -> Result<CertificateFiles, CaError> {
    validate_username(username)?;
    let authority = Authority::load(input)?;
    issue(
        &authority,
        &format!("{USER_CN_PREFIX}{username}"),
        Vec::new(),
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        output,
        username,
    )
}

/// The cluster UUID of a cluster: the OU of its CA certificate.
pub fn load_cluster_id(cluster_crt: &Path) -> Result<Uuid, CaError> {
    let der = read_certificate(cluster_crt).map_err(|reason| CaError::LoadAuthority {
        reason,
        path: cluster_crt.to_owned(),
    })?;
    let invalid = |reason: String| CaError::InvalidCertificate {
        reason,
        path: cluster_crt.to_owned(),
    };
    let names = parse_subject(&der).map_err(invalid)?;
    cluster_id_of(&names).map_err(invalid)
}

/// The commonName and organizationalUnitName of a DER certificate's subject.
/// A name that occurs several times is reported as absent (an ambiguous
/// subject must not match any role). Fails if the certificate cannot be
/// parsed or a name is not a string.
pub fn parse_subject(der: &[u8]) -> Result<SubjectNames, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let subject = cert.subject();
    let single = |mut values: Vec<String>| {
        if values.len() == 1 {
            values.pop()
        } else {
            None
        }
    };
    let collect = |attrs: Vec<&x509_parser::x509::AttributeTypeAndValue<'_>>| {
        attrs
            .into_iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_owned)
                    .map_err(|e| format!("subject attribute is not a string: {e}"))
            })
            .collect::<Result<Vec<String>, String>>()
    };
    let common_name = single(collect(subject.iter_common_name().collect())?);
    let organizational_unit = single(collect(subject.iter_organizational_unit().collect())?);
    Ok(SubjectNames {
        common_name,
        organizational_unit,
    })
}

/// The cluster UUID named by a subject's OU.
pub fn cluster_id_of(names: &SubjectNames) -> Result<Uuid, String> {
    let ou = names
        .organizational_unit
        .as_deref()
        .ok_or_else(|| "the subject has no single organizationalUnitName".to_owned())?;
    Uuid::parse_str(ou).map_err(|_| format!("the subject OU {ou:?} is not a cluster UUID"))
}

// ---------------------------------------------------------------------------
// Internals

/// A loaded certificate authority, able to sign leaf certificates.
struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cluster_id: Uuid,
    /// DER of the CA subject, to check that issued certificates name it
    /// byte for byte (webpki chains by exact name comparison).
    subject_raw: Vec<u8>,
}

impl Authority {
    fn load(dir: &Path) -> Result<Authority, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let load_err = |path: &Path| {
            let path = path.to_owned();
            move |reason: String| CaError::LoadAuthority { reason, path }
        };
        let der = read_certificate(&cert_path).map_err(load_err(&cert_path))?;
        let key_pem = fs::read_to_string(&key_path)
            .map_err(|e| e.to_string())
            .map_err(load_err(&key_path))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| format!("not a usable private key: {e}"))
            .map_err(load_err(&key_path))?;

        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("not a valid X.509 certificate: {e}"))
            .map_err(load_err(&cert_path))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CaError::LoadAuthority {
                reason: format!(
                    "the private key {} does not belong to this certificate.",
                    key_path.display()
                ),
                path: cert_path,
            });
        }
        let names = parse_subject(&der).map_err(load_err(&cert_path))?;
        let cluster_id = cluster_id_of(&names).map_err(load_err(&cert_path))?;
        let distinguished_name =
            distinguished_name_of(cert.subject()).map_err(load_err(&cert_path))?;
        let key_id = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            });

        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name;
        params.key_identifier_method = match key_id {
            Some(id) => KeyIdMethod::PreSpecified(id),
            None => KeyIdMethod::Sha256,
        };
        let subject_raw = cert.subject().as_raw().to_vec();
        Ok(Authority {
            issuer: Issuer::new(params, key),
            cluster_id,
            subject_raw,
        })
    }
}

/// Rebuild an rcgen distinguished name equal (byte for byte, once encoded)
/// to a parsed one: same attribute order, same string types.
fn distinguished_name_of(name: &X509Name<'_>) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err("multi-valued subject names are not supported".to_owned());
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| "unsupported subject attribute type".to_owned())?
            .collect();
        let value = attr.attr_value();
        let text = std::str::from_utf8(value.data)
            .map_err(|_| "subject attribute is not a UTF-8 string".to_owned())?;
        let bad = |e: rcgen::Error| format!("unsupported subject attribute value: {e}");
        let value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
            Tag::PrintableString => DnValue::PrintableString(text.try_into().map_err(bad)?),
            Tag::Ia5String => DnValue::Ia5String(text.try_into().map_err(bad)?),
            other => return Err(format!("unsupported subject attribute string type {other}")),
        };
        let ty = DnType::from_oid(&oid);
        if dn.get(&ty).is_some() {
            return Err("repeated subject attribute types are not supported".to_owned());
        }
        dn.push(ty, value);
    }
    Ok(dn)
}

/// Parameters common to every certificate: subject `OU=<cluster>, CN=<cn>`,
/// validity, serial number.
fn base_params(cluster_id: Uuid, common_name: &str) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationalUnitName, cluster_id.to_string());
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + Duration::seconds(VALIDITY_SECONDS);
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// A random, non-zero, positive 128-bit serial number.
fn random_serial() -> Result<SerialNumber, CaError> {
    let random = rustls::crypto::ring::default_provider().secure_random;
    let mut bytes = [0u8; 16];
    loop {
        random
            .fill(&mut bytes)
            .map_err(|_| CaError::Generate("no secure random numbers available".to_owned()))?;
        if bytes.iter().any(|b| *b != 0) {
            // rcgen encodes the bytes as a positive INTEGER (prepending a
            // zero octet when the top bit is set).
            return Ok(SerialNumber::from_slice(&bytes));
        }
    }
}

fn new_key() -> Result<KeyPair, CaError> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

/// Issue a leaf certificate and write `<stem>.crt` / `<stem>.key` in `output`.
fn issue(
    authority: &Authority,
    common_name: &str,
    sans: Vec<SanType>,
    ekus: Vec<ExtendedKeyUsagePurpose>,
    output: &Path,
    stem: &str,
) -> Result<CertificateFiles, CaError> {
    let key = new_key()?;
    let mut params = base_params(authority.cluster_id, common_name)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = ekus;
    params.subject_alt_names = sans;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &authority.issuer)?;

    let (_, parsed) = x509_parser::parse_x509_certificate(cert.der())
        .map_err(|e| CaError::Generate(format!("generated an unparsable certificate: {e}")))?;
    if parsed.issuer().as_raw() != authority.subject_raw.as_slice() {
        return Err(CaError::Generate(
            "the issuer name of the new certificate does not match the certificate authority subject"
                .to_owned(),
        ));
    }

    let cert_path = output.join(format!("{stem}.crt"));
    let key_path = output.join(format!("{stem}.key"));
    write_pair(&cert_path, &cert.pem(), &key_path, &key.serialize_pem())?;
    Ok(CertificateFiles {
        cert_path,
        key_path,
    })
}

/// `IP:` if `name` parses as an IP address, `DNS:` if it is a valid DNS name.
fn subject_alt_name(name: &str) -> Result<SanType, CaError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if rustls_pki_types::DnsName::try_from(name).is_err() {
        return Err(CaError::InvalidHostname(name.to_owned()));
    }
    let dns = name
        .try_into()
        .map_err(|_| CaError::InvalidHostname(name.to_owned()))?;
    Ok(SanType::DnsName(dns))
}

/// A username becomes part of a CN and a file name.
fn validate_username(username: &str) -> Result<(), CaError> {
    let problem = if username.is_empty() {
        Some("it is empty")
    } else if username.contains('/') {
        Some("it contains '/'")
    } else if username.contains('\0') {
        Some("it contains a NUL character")
    } else if username == "." || username == ".." {
        Some("it is not a file name")
    } else {
        None
    };
    match problem {
        Some(why) => Err(CaError::InvalidUsername(format!(
            "{username:?} cannot be used: {why}"
        ))),
        None => Ok(()),
    }
}

/// Read the first certificate of a PEM file.
fn read_certificate(path: &Path) -> Result<CertificateDer<'static>, String> {
    let pem = fs::read(path).map_err(|e| e.to_string())?;
    CertificateDer::from_pem_slice(&pem).map_err(|e| format!("not a PEM certificate: {e}"))
}

/// Write the certificate, then the key; remove the certificate again if the
/// key cannot be written.
fn write_pair(
    cert_path: &Path,
    cert_pem: &str,
    key_path: &Path,
    key_pem: &str,
) -> Result<(), CaError> {
    write_exclusive(cert_path, cert_pem.as_bytes()).map_err(|reason| {
        CaError::WriteCertificate {
            reason,
            path: cert_path.to_owned(),
        }
    })?;
    if let Err(reason) = write_exclusive(key_path, key_pem.as_bytes()) {
        // Best effort: the certificate is useless without its key.
        let _ = fs::remove_file(cert_path);
        return Err(CaError::WriteKey {
            reason,
            path: key_path.to_owned(),
        });
    }
    Ok(())
}

/// Create `path` exclusively (O_CREAT|O_EXCL) with mode 0600 and write
/// `contents` durably. On a write failure the new file is removed.
fn write_exclusive(path: &Path, contents: &[u8]) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| e.to_string())?;
    let result = file
        .set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(contents))
        .and_then(|()| file.sync_all());
    if let Err(e) = result {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(e.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &Path) -> Vec<u8> {
        let pem = fs::read(path).unwrap();
        CertificateDer::from_pem_slice(&pem).unwrap().to_vec()
    }

    #[test]
    fn san_rule() {
        assert_eq!(
            subject_alt_name("10.0.0.1").unwrap(),
            SanType::IpAddress("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            subject_alt_name("::1").unwrap(),
            SanType::IpAddress("::1".parse().unwrap())
        );
        assert!(matches!(
            subject_alt_name("ctl.example.com").unwrap(),
            SanType::DnsName(_)
        ));
        assert!(subject_alt_name("bad/name").is_err());
        assert!(subject_alt_name("").is_err());
    }

    #[test]
    fn usernames() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username("../x").is_err());
        assert!(validate_username("..").is_err());
    }

    #[test]
    fn serials_are_positive_and_distinct() {
        let a = random_serial().unwrap();
        let b = random_serial().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn issuer_matches_and_aki_equals_ski() {
        let dir = tempfile::tempdir().unwrap();
        let info = initialize(dir.path(), "test cluster").unwrap();
        let files = create_api_certificate(dir.path(), dir.path(), "alice").unwrap();
        let ca_der = parse(&info.cert_path);
        let leaf_der = parse(&files.cert_path);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
        let ski = ca
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
            .unwrap();
        let aki = leaf
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(aki, ski);
        assert_eq!(load_cluster_id(&info.cert_path).unwrap(), info.cluster_id);
    }

    #[test]
    fn failed_key_write_removes_certificate() {
        let dir = tempfile::tempdir().unwrap();
        initialize(dir.path(), "c").unwrap();
        fs::write(dir.path().join("bob.key"), b"x").unwrap();
        let err = create_api_certificate(dir.path(), dir.path(), "bob").unwrap_err();
        assert!(matches!(err, CaError::WriteKey { .. }), "{err}");
        assert!(!dir.path().join("bob.crt").exists());
        assert_eq!(fs::read(dir.path().join("bob.key")).unwrap(), b"x");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        initialize(a.path(), "a").unwrap();
        initialize(b.path(), "b").unwrap();
        fs::remove_file(a.path().join(CA_KEY_FILE)).unwrap();
        fs::copy(b.path().join(CA_KEY_FILE), a.path().join(CA_KEY_FILE)).unwrap();
        let err = create_node_certificate(a.path(), a.path()).unwrap_err();
        assert!(matches!(err, CaError::LoadAuthority { .. }), "{err}");
    }
}
