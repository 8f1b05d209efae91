//! A listener's TLS settings, from Kafka's `ssl.*` keys (each also as
//! `listener.name.<listener>.ssl.*`), turned into a rustls server config at start, and the
//! client config this broker connects to other brokers' inter-broker listener with.
//!
//! Key stores: PEM (KIP-651: `ssl.keystore.location` holding a PKCS#8 key and its chain, or
//! `ssl.keystore.key` + `ssl.keystore.certificate.chain` inline) and PKCS12 (`ssl.keystore.type=
//! PKCS12`, `ssl.keystore.password`), read by the `p12-keystore` crate without its legacy
//! RC2/3DES ciphers: what `openssl pkcs12 -export` (OpenSSL 3) and Java's keytool (JDK 12+) write
//! by default (PBES2 with AES) loads; an older store gets an error saying how to re-export it.
//! JKS is refused, naming PEM and PKCS12.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_rustls::rustls;
use rustls::crypto::CryptoProvider;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::listener_property;
use super::principal::MappingRules;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Required,
    Requested,
    None,
}

/// Kafka writes PEM inline in a properties file on one line (`\` continuations joined): put the
/// line breaks back so the PEM parser sees the usual shape.
fn normalize_pem(text: &str) -> String {
    if text.contains('\n') {
        return text.to_string();
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(begin) = rest.find("-----BEGIN ") {
        let after_begin = &rest[begin + 11..];
        let Some(label_end) = after_begin.find("-----") else { break };
        let label = &after_begin[..label_end];
        let body_start = &after_begin[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(body_end) = body_start.find(&end_marker) else { break };
        let body: String = body_start[..body_end].chars().filter(|c| !c.is_whitespace()).collect();
        out.push_str(&format!("-----BEGIN {label}-----\n"));
        for chunk in body.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str(&end_marker);
        out.push('\n');
        rest = &body_start[body_end + end_marker.len()..];
    }
    out
}

fn read_file(key: &str, path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{key}={path}: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreType {
    Pem,
    Pkcs12,
}

/// `ssl.keystore.type` / `ssl.truststore.type`; Kafka's default is JKS, which a broker configured
/// for this one cannot have meant: absent means PEM.
fn store_type(key: &str, value: Option<&str>) -> Result<StoreType, String> {
    match value.map(|v| v.trim().to_ascii_uppercase()).as_deref() {
        None | Some("PEM") => Ok(StoreType::Pem),
        Some("PKCS12") => Ok(StoreType::Pkcs12),
        Some(other) => Err(format!(
            "{key}={other}: only PEM and PKCS12 stores are supported (convert a JKS store with \
             `keytool -importkeystore -srcstoretype JKS -deststoretype PKCS12`)"
        )),
    }
}

/// A PKCS12 store's entries; `what` names the key for messages.
fn pkcs12(what: &str, path: &str, password: Option<&str>, policy: p12_keystore::Pkcs12ImportPolicy) -> Result<p12_keystore::KeyStore, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{what}={path}: {e}"))?;
    p12_keystore::KeyStore::from_pkcs12(&bytes, password.unwrap_or(""), policy).map_err(|e| {
        format!(
            "{what}={path}: cannot read the PKCS12 store ({e}): check the password; a store with legacy RC2/3DES \
             encryption needs re-exporting (`openssl pkcs12 -export` of OpenSSL 3 writes AES)"
        )
    })
}

/// The key and its chain from a PKCS12 key store (the first key entry, as Java picks one).
fn pkcs12_key_chain(path: &str, password: Option<&str>, key_password: Option<&str>) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    if key_password.is_some_and(|k| Some(k) != password) {
        return Err("ssl.key.password differs from ssl.keystore.password: PKCS12 key stores with a separate key password are not supported".into());
    }
    let store = pkcs12("ssl.keystore.location", path, password, p12_keystore::Pkcs12ImportPolicy::Strict)?;
    let (_, chain) = store.private_key_chain().ok_or_else(|| format!("ssl.keystore.location={path}: no private key with a certificate in the PKCS12 store"))?;
    let certs: Vec<CertificateDer<'static>> = chain.certs().iter().map(|c| CertificateDer::from(c.as_der().to_vec())).collect();
    if certs.is_empty() {
        return Err(format!("ssl.keystore.location={path}: the PKCS12 key has no certificate"));
    }
    let key = PrivateKeyDer::try_from(chain.key().as_der().to_vec()).map_err(|e| format!("ssl.keystore.location={path}: {e}"))?;
    Ok((certs, key))
}

/// Every certificate of a PKCS12 trust store.
fn pkcs12_certificates(path: &str, password: Option<&str>) -> Result<Vec<CertificateDer<'static>>, String> {
    // Raw: a trust store made by openssl has certificates without Java's trust attribute, which
    // the other policies would drop.
    let store = pkcs12("ssl.truststore.location", path, password, p12_keystore::Pkcs12ImportPolicy::Raw)?;
    let mut certs = Vec::new();
    for (_, entry) in store.entries() {
        match entry {
            p12_keystore::KeyStoreEntry::Certificate(cert) => certs.push(CertificateDer::from(cert.as_der().to_vec())),
            p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => {
                certs.extend(chain.certs().iter().map(|c| CertificateDer::from(c.as_der().to_vec())))
            }
            p12_keystore::KeyStoreEntry::Secret(_) => {}
        }
    }
    if certs.is_empty() {
        return Err(format!("ssl.truststore.location={path}: no certificate in the PKCS12 store"));
    }
    Ok(certs)
}

fn certificates(key: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(normalize_pem(pem).as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key}: bad PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{key}: no certificate found"));
    }
    Ok(certs)
}

fn private_key(key: &str, pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    if pem.contains("ENCRYPTED PRIVATE KEY") {
        return Err(format!("{key}: encrypted private keys are not supported; give an unencrypted PKCS#8 key"));
    }
    PrivateKeyDer::from_pem_slice(normalize_pem(pem).as_bytes()).map_err(|e| format!("{key}: no usable private key: {e}"))
}

fn protocol_versions(value: Option<&str>) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let mut versions = Vec::new();
    for name in value.unwrap_or("TLSv1.2,TLSv1.3").split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "TLSv1.3" => versions.push(&rustls::version::TLS13),
            "TLSv1.2" => versions.push(&rustls::version::TLS12),
            other => return Err(format!("ssl.enabled.protocols: {other} is not offered (TLSv1.2 and TLSv1.3 are)")),
        }
    }
    if versions.is_empty() {
        return Err("ssl.enabled.protocols: empty".into());
    }
    Ok(versions)
}

/// ring's cipher suites, narrowed to `ssl.cipher.suites` (IANA names, which Java uses too;
/// rustls names TLS 1.3 suites TLS13_*).
fn provider(cipher_suites: Option<&str>) -> Result<CryptoProvider, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    let Some(wanted) = cipher_suites.filter(|s| !s.trim().is_empty()) else { return Ok(provider) };
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    let name = |suite: &rustls::SupportedCipherSuite| format!("{:?}", suite.suite()).replace("TLS13_", "TLS_");
    if let Some(unknown) = wanted.iter().find(|w| !provider.cipher_suites.iter().any(|s| name(s) == **w)) {
        return Err(format!(
            "ssl.cipher.suites: {unknown} is not offered; these are: {}",
            provider.cipher_suites.iter().map(name).collect::<Vec<_>>().join(",")
        ));
    }
    provider.cipher_suites.retain(|s| wanted.contains(&name(s).as_str()));
    Ok(provider)
}

pub struct TlsSettings {
    pub config: Arc<ServerConfig>,
    pub client_auth: ClientAuth,
    /// `ssl.principal.mapping.rules`: a client certificate's subject to a principal name.
    pub principal_rules: MappingRules,
}

/// The key store's certificate chain and key (`ssl.keystore.*`), None when none is set.
fn keystore<'a>(get: &dyn Fn(&str) -> Option<&'a str>) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
    let keystore_type = store_type("ssl.keystore.type", get("ssl.keystore.type"))?;
    match (get("ssl.keystore.location"), get("ssl.keystore.key"), get("ssl.keystore.certificate.chain")) {
        (Some(path), None, None) if keystore_type == StoreType::Pkcs12 => {
            Ok(Some(pkcs12_key_chain(path, get("ssl.keystore.password"), get("ssl.key.password"))?))
        }
        (Some(path), None, None) => {
            let pem = read_file("ssl.keystore.location", path)?;
            Ok(Some((certificates("ssl.keystore.location", &pem)?, private_key("ssl.keystore.location", &pem)?)))
        }
        (None, Some(key), Some(chain)) => {
            Ok(Some((certificates("ssl.keystore.certificate.chain", chain)?, private_key("ssl.keystore.key", key)?)))
        }
        (None, None, None) => Ok(None),
        _ => Err("set ssl.keystore.location (PEM key and chain, or PKCS12), or ssl.keystore.key and ssl.keystore.certificate.chain".into()),
    }
}

/// The trust store's certificates (`ssl.truststore.*`), None when none is set.
fn truststore<'a>(get: &dyn Fn(&str) -> Option<&'a str>) -> Result<Option<RootCertStore>, String> {
    let truststore_type = store_type("ssl.truststore.type", get("ssl.truststore.type"))?;
    let trusted = match (get("ssl.truststore.location"), get("ssl.truststore.certificates")) {
        (Some(path), _) if truststore_type == StoreType::Pkcs12 => pkcs12_certificates(path, get("ssl.truststore.password"))?,
        (Some(path), _) => certificates("ssl.truststore.location", &read_file("ssl.truststore.location", path)?)?,
        (None, Some(pem)) => certificates("ssl.truststore.certificates", pem)?,
        (None, None) => return Ok(None),
    };
    let mut roots = RootCertStore::empty();
    for cert in trusted {
        roots.add(cert).map_err(|e| format!("ssl.truststore: {e}"))?;
    }
    Ok(Some(roots))
}

/// The listener's TLS server config; errors name the key at fault.
pub fn server_config(properties: &BTreeMap<String, String>, listener: &str) -> Result<TlsSettings, String> {
    let get = |key: &str| listener_property(properties, listener, key);
    let principal_rules = MappingRules::parse(get("ssl.principal.mapping.rules"))?;
    let (chain, key) = keystore(&get)?.ok_or_else(|| {
        format!("listener {listener} uses TLS: set ssl.keystore.location (PEM key and chain, or PKCS12), or ssl.keystore.key and ssl.keystore.certificate.chain")
    })?;
    let client_auth = match get("ssl.client.auth").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("none") => ClientAuth::None,
        Some("requested") => ClientAuth::Requested,
        Some("required") => ClientAuth::Required,
        Some(other) => return Err(format!("ssl.client.auth={other}: expected required, requested or none")),
    };
    let provider = Arc::new(provider(get("ssl.cipher.suites"))?);
    let versions = protocol_versions(get("ssl.enabled.protocols"))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("ssl.enabled.protocols with ssl.cipher.suites: {e}"))?;
    let builder = if client_auth == ClientAuth::None {
        builder.with_no_client_auth()
    } else {
        let roots = truststore(&get)?
            .ok_or_else(|| format!("ssl.client.auth on listener {listener} needs ssl.truststore.location or ssl.truststore.certificates"))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if client_auth == ClientAuth::Requested { verifier.allow_unauthenticated() } else { verifier };
        builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("ssl.truststore: {e}"))?)
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| format!("ssl.keystore: the key does not fit the certificate: {e}"))?;
    Ok(TlsSettings { config: Arc::new(config), client_auth, principal_rules })
}

/// The TLS client config this broker connects to another broker's `listener` with, from the
/// same keys as Kafka's inter-broker client: the other broker is verified against the trust store
/// (and its certificate must name the registered host unless `ssl.endpoint.identification.algorithm`
/// is empty), and this broker presents its key store's certificate when asked (mTLS).
pub fn client_config(properties: &BTreeMap<String, String>, listener: &str) -> Result<Arc<ClientConfig>, String> {
    let get = |key: &str| listener_property(properties, listener, key);
    let roots = truststore(&get)?.ok_or_else(|| {
        format!("the inter-broker listener {listener} uses TLS: set ssl.truststore.location (PEM) to verify the other brokers")
    })?;
    let check_hostname = match get("ssl.endpoint.identification.algorithm").map(str::trim) {
        None => true,
        Some(a) if a.eq_ignore_ascii_case("https") => true,
        Some("") => false,
        Some(other) => return Err(format!("ssl.endpoint.identification.algorithm={other}: expected https or empty")),
    };
    let provider = Arc::new(provider(get("ssl.cipher.suites"))?);
    let versions = protocol_versions(get("ssl.enabled.protocols"))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("ssl.truststore: {e}"))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("ssl.enabled.protocols with ssl.cipher.suites: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier { inner: verifier, check_hostname }));
    let config = match keystore(&get)? {
        Some((chain, key)) => {
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("ssl.keystore: the key does not fit the certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// webpki's verification of the chain against the trust store, with the hostname check made
/// optional as `ssl.endpoint.identification.algorithm=` (empty) makes it in Kafka.
#[derive(Debug)]
struct ServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    check_hostname: bool,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }))
                if !self.check_hostname =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether the kernel offers TLS offload (the `tls` upper layer protocol), which zero-copy fetch
/// over TLS would need. Read once at start (not on a shard).
pub fn kernel_tls_available() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").map_or(false, |ulps| ulps.split_whitespace().any(|u| u == "tls"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_pem_gets_its_line_breaks_back() {
        let pem = "-----BEGIN CERTIFICATE----- QUJD REVG -----END CERTIFICATE-----";
        assert_eq!(normalize_pem(pem), "-----BEGIN CERTIFICATE-----\nQUJDREVG\n-----END CERTIFICATE-----\n");
    }

    #[test]
    fn unsupported_stores_and_protocols_are_named() {
        assert_eq!(store_type("ssl.keystore.type", Some("pkcs12")), Ok(StoreType::Pkcs12));
        let jks = store_type("ssl.keystore.type", Some("JKS")).unwrap_err();
        assert!(jks.contains("PEM and PKCS12"), "{jks}");
        assert!(protocol_versions(Some("TLSv1.1")).is_err());
        assert!(provider(Some("TLS_AES_128_GCM_SHA256")).unwrap().cipher_suites.len() == 1);
        assert!(provider(Some("NOPE")).is_err());
    }
}
