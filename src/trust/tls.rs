//! rustls configurations for both directions of inter-operator SMTP.
//!
//! Both directions share one policy: TLS 1.2 and 1.3 only (configurable within that
//! range, because whether every peer accepts 1.3 is unconfirmed), ECDHE key exchange with
//! AEAD suites only, aws-lc-rs as the crypto provider, and our IGC Santé certificate
//! presented on both sides.
//!
//! Certificate *trust* is deliberately not decided inside the handshake: the verifiers
//! below accept any chain at handshake time and only check that the peer holds the
//! private key of the certificate it presents. The decision is taken right after the
//! handshake by [`verify_chain`](super::verify::verify_chain) on `peer_certificates()`,
//! because a TLS alert tells the peer operator nothing, while an SMTP reply (inbound) or a
//! log line and a bounce (outbound) can say precisely "certificate expired on ..." and be
//! counted by reason. Callers MUST run `verify_chain` before trusting the connection.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{aws_lc_rs, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CipherSuite, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::pki::{OurIdentity, TrustStore};

/// A TLS protocol version the gateway may negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "TLS 1.2",
            TlsVersion::Tls13 => "TLS 1.3",
        })
    }
}

/// The range of TLS versions to offer or accept (both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsVersions {
    pub min: TlsVersion,
    pub max: TlsVersion,
}

impl Default for TlsVersions {
    /// TLS 1.2 (the MSSanté baseline) to TLS 1.3.
    fn default() -> Self {
        TlsVersions {
            min: TlsVersion::Tls12,
            max: TlsVersion::Tls13,
        }
    }
}

impl TlsVersions {
    fn protocol_versions(self) -> Result<Vec<&'static SupportedProtocolVersion>, TlsConfigError> {
        if self.min > self.max {
            return Err(TlsConfigError::VersionRange {
                min: self.min,
                max: self.max,
            });
        }
        let mut versions = Vec::new();
        if self.min <= TlsVersion::Tls13 && TlsVersion::Tls13 <= self.max {
            versions.push(&rustls::version::TLS13);
        }
        if self.min <= TlsVersion::Tls12 && TlsVersion::Tls12 <= self.max {
            versions.push(&rustls::version::TLS12);
        }
        Ok(versions)
    }
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("TLS minimum version {min} is above the maximum {max}; set min to TLS 1.2 or max to TLS 1.3")]
    VersionRange { min: TlsVersion, max: TlsVersion },
    #[error("rustls refused the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The suites we allow: ECDHE (forward secrecy) with AEAD ciphers only. TLS 1.3 suites
/// are all ECDHE-based; for TLS 1.2 this keeps ECDHE-RSA-AES-128/256-GCM, the documented
/// MSSanté baseline, plus their ECDSA and ChaCha20-Poly1305 equivalents.
const ALLOWED_SUITES: &[CipherSuite] = &[
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// aws-lc-rs with the suite list filtered to [`ALLOWED_SUITES`], so that a future rustls
/// default adding a suite does not silently widen what we accept.
fn provider() -> CryptoProvider {
    let mut provider = aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .retain(|suite| ALLOWED_SUITES.contains(&suite.suite()));
    provider
}

/// What a TLS session negotiated, as logs, metrics and `Received:` headers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1_3`, `TLSv1_2` (rustls' names), or `unknown`.
    pub version: &'static str,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`, or `unknown`.
    pub cipher: &'static str,
}

impl TlsInfo {
    /// Reads them off an established session (client or server side).
    pub fn of(conn: &rustls::CommonState) -> TlsInfo {
        TlsInfo {
            version: conn
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("unknown"),
            cipher: conn
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str())
                .unwrap_or("unknown"),
        }
    }

    /// Every version and suite a client can get from [`server_config`] with `our` key and
    /// `versions`: the TLS 1.3 suites, and the TLS 1.2 ones that sign with our key's
    /// algorithm. Empty if the key cannot be loaded (`server_config` then fails too).
    pub fn offered(our: &OurIdentity, versions: TlsVersions) -> Vec<TlsInfo> {
        let provider = provider();
        let (Ok(key), Ok(versions)) = (
            provider
                .key_provider
                .load_private_key(our.key().clone_key()),
            versions.protocol_versions(),
        ) else {
            return Vec::new();
        };
        provider
            .cipher_suites
            .iter()
            .filter(|suite| {
                versions
                    .iter()
                    .any(|v| v.version == suite.version().version)
            })
            .filter(|suite| suite.usable_for_signature_algorithm(key.algorithm()))
            .filter_map(|suite| {
                Some(TlsInfo {
                    version: suite.version().version.as_str()?,
                    cipher: suite.suite().as_str()?,
                })
            })
            .collect()
    }
}

impl fmt::Display for TlsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.version, self.cipher)
    }
}

/// Server side (after STARTTLS): presents our certificate and requests, without
/// requiring, a client certificate.
pub fn server_config(
    our: &OurIdentity,
    store: Arc<TrustStore>,
    versions: TlsVersions,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = provider();
    let verifier = RequestClientCert {
        store,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions.protocol_versions()?)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(our.chain().to_vec(), our.key().clone_key())?;
    Ok(Arc::new(config))
}

/// Client side (outbound delivery to a peer operator): presents our certificate as the
/// client certificate. The caller verifies the server's chain afterwards with
/// `verify_chain(peer_certificates, store, now, Usage::Server)` and compares its CN with
/// the MX host; the `ServerName` given to the connector is used for SNI only. No trust
/// store is needed here for that reason: the store is an argument of `verify_chain`.
pub fn client_config(
    our: &OurIdentity,
    versions: TlsVersions,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = provider();
    let verifier = DeferServerCertCheck {
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions.protocol_versions()?)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(our.chain().to_vec(), our.key().clone_key())?;
    Ok(Arc::new(config))
}

/// Requests a client certificate, offering the espace's roots as hints, but lets the
/// handshake complete whatever the peer presents (or if it presents nothing).
///
/// Why: refusing in the handshake ends the connection with a bare TLS alert, which the
/// peer's administrator cannot diagnose and we cannot attribute to a reason. Completing
/// it lets the SMTP session run `verify_chain` and answer MAIL FROM with a 5.7.x reply
/// naming the problem. The handshake signature (CertificateVerify) is still verified for
/// real, so a peer cannot present a certificate whose key it does not hold: what
/// `verify_chain` judges later is genuinely the peer's certificate.
#[derive(Debug)]
struct RequestClientCert {
    /// Gives the root hints (acceptable CA names) sent in CertificateRequest.
    store: Arc<TrustStore>,
    /// The provider's algorithms, to check the peer's proof of key possession.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.store.subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Trust is decided after the handshake by `verify_chain` (see the type's doc).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Lets the handshake with a peer's server complete whatever chain it presents, while
/// verifying its handshake signature for real (so the certificate is genuinely the
/// server's). The relay then runs `verify_chain(.., Usage::Server)` and the CN/MX check
/// before sending a single SMTP command, so a refusal is logged and bounced with its
/// precise reason instead of an opaque handshake failure.
#[derive(Debug)]
struct DeferServerCertCheck {
    /// The provider's algorithms, to check the server's proof of key possession.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for DeferServerCertCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Trust and name are decided after the handshake (see the type's doc).
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use rustls::ProtocolVersion;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::trust::verify::{verify_chain, CertError, Usage};

    fn test_file(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("certs-test")
            .join(name)
    }

    fn identity(name: &str) -> OurIdentity {
        OurIdentity::load(
            &test_file(&format!("{name}-chain.pem")),
            &test_file(&format!("{name}.key")),
        )
        .expect("test identity loads")
    }

    fn store() -> Arc<TrustStore> {
        Arc::new(
            TrustStore::load(
                &[test_file("anchors.pem")],
                &[test_file("intermediate-ca.pem")],
                &[test_file("intermediate-ca.crl.pem")],
            )
            .expect("test store loads"),
        )
    }

    fn now() -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(1_893_456_000)) // 2030-01-01
    }

    /// What each side saw once the handshake is done and one exchange went through.
    struct Outcome {
        client_chain_seen_by_server: Vec<CertificateDer<'static>>,
        server_chain_seen_by_client: Vec<CertificateDer<'static>>,
        version: Option<ProtocolVersion>,
    }

    async fn exchange(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let acceptor = TlsAcceptor::from(server);
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("server handshake");
            let mut hello = [0u8; 5];
            tls.read_exact(&mut hello).await.expect("read hello");
            assert_eq!(&hello, b"hello");
            tls.write_all(b"ok").await.expect("write ok");
            tls.flush().await.expect("flush");
            tls.get_ref()
                .1
                .peer_certificates()
                .map(<[CertificateDer<'static>]>::to_vec)
                .unwrap_or_default()
        });

        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("smtp.gateway.test.mssante.fr").expect("valid name");
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .expect("client handshake");
        tls.write_all(b"hello").await.expect("write hello");
        tls.flush().await.expect("flush");
        let mut ok = [0u8; 2];
        tls.read_exact(&mut ok).await.expect("read ok");
        assert_eq!(&ok, b"ok");
        let (_, conn) = tls.get_ref();
        let server_chain_seen_by_client = conn
            .peer_certificates()
            .map(<[CertificateDer<'static>]>::to_vec)
            .unwrap_or_default();
        let version = conn.protocol_version();
        let client_chain_seen_by_server = server_task.await.expect("server task");
        Outcome {
            client_chain_seen_by_server,
            server_chain_seen_by_client,
            version,
        }
    }

    fn gateway_server(versions: TlsVersions) -> Arc<ServerConfig> {
        server_config(&identity("gateway"), store(), versions).expect("server config")
    }

    #[tokio::test]
    async fn valid_peer_handshakes_and_its_chain_verifies_both_ways() {
        let client =
            client_config(&identity("peer-a"), TlsVersions::default()).expect("client config");
        let outcome = exchange(gateway_server(TlsVersions::default()), client).await;
        assert_eq!(outcome.version, Some(ProtocolVersion::TLSv1_3));

        let peer = verify_chain(
            &outcome.client_chain_seen_by_server,
            &store(),
            now(),
            Usage::Client,
        )
        .expect("peer-a is accepted as a client");
        assert_eq!(peer.cn.as_deref(), Some("smtp.peer-a.test.mssante.fr"));

        let server = verify_chain(
            &outcome.server_chain_seen_by_client,
            &store(),
            now(),
            Usage::Server,
        )
        .expect("the gateway is accepted as a server");
        assert_eq!(server.cn.as_deref(), Some("smtp.gateway.test.mssante.fr"));
    }

    #[tokio::test]
    async fn expired_peer_completes_the_handshake_and_is_refused_afterwards() {
        let client = client_config(&identity("peer-expired"), TlsVersions::default())
            .expect("client config");
        let outcome = exchange(gateway_server(TlsVersions::default()), client).await;
        let err = verify_chain(
            &outcome.client_chain_seen_by_server,
            &store(),
            now(),
            Usage::Client,
        )
        .unwrap_err();
        assert!(matches!(err, CertError::Expired { .. }), "{err:?}");
        assert_eq!(err.client_reason(), "client_cert_expired");
    }

    #[tokio::test]
    async fn peer_without_certificate_completes_the_handshake_and_is_missing() {
        let provider = provider();
        let verifier = DeferServerCertCheck {
            algorithms: provider.signature_verification_algorithms,
        };
        let client = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let outcome = exchange(gateway_server(TlsVersions::default()), Arc::new(client)).await;
        assert!(outcome.client_chain_seen_by_server.is_empty());
        let err = verify_chain(
            &outcome.client_chain_seen_by_server,
            &store(),
            now(),
            Usage::Client,
        )
        .unwrap_err();
        assert_eq!(err, CertError::Missing);
    }

    #[tokio::test]
    async fn tls12_only_configuration_negotiates_tls12_with_client_auth() {
        let tls12 = TlsVersions {
            min: TlsVersion::Tls12,
            max: TlsVersion::Tls12,
        };
        let client =
            client_config(&identity("peer-b"), TlsVersions::default()).expect("client config");
        let outcome = exchange(gateway_server(tls12), client).await;
        assert_eq!(outcome.version, Some(ProtocolVersion::TLSv1_2));
        verify_chain(
            &outcome.client_chain_seen_by_server,
            &store(),
            now(),
            Usage::Client,
        )
        .expect("peer-b is accepted over TLS 1.2");
    }

    #[test]
    fn inverted_version_range_is_refused() {
        let err = server_config(
            &identity("gateway"),
            store(),
            TlsVersions {
                min: TlsVersion::Tls13,
                max: TlsVersion::Tls12,
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, TlsConfigError::VersionRange { .. }),
            "{err:?}"
        );
    }

    /// What `mssante_tls_handshakes_total` is created with at start-up: TLS 1.3 suites
    /// and, with an RSA key, the ECDHE_RSA ones of TLS 1.2, in the allowed versions only.
    #[test]
    fn the_offered_suites_are_those_our_key_and_versions_allow() {
        let all = TlsInfo::offered(&identity("gateway"), TlsVersions::default());
        for (version, cipher) in [
            ("TLSv1_3", "TLS13_AES_256_GCM_SHA384"),
            ("TLSv1_2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        ] {
            assert!(all.contains(&TlsInfo { version, cipher }), "{all:?}");
        }
        assert!(all.iter().all(|s| !s.cipher.contains("ECDSA")), "{all:?}");
        let tls13 = TlsVersions {
            min: TlsVersion::Tls13,
            max: TlsVersion::Tls13,
        };
        let only = TlsInfo::offered(&identity("gateway"), tls13);
        assert!(!only.is_empty() && only.iter().all(|s| s.version == "TLSv1_3"));
    }

    #[test]
    fn only_ecdhe_aead_suites_are_offered() {
        let suites: Vec<CipherSuite> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert!(!suites.is_empty());
        assert!(
            suites.iter().all(|s| ALLOWED_SUITES.contains(s)),
            "{suites:?}"
        );
        assert!(suites.contains(&CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256));
        assert!(suites.contains(&CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384));
    }

    #[test]
    fn client_certificate_is_requested_not_required_with_igc_root_hints() {
        let verifier = RequestClientCert {
            store: store(),
            algorithms: provider().signature_verification_algorithms,
        };
        assert!(verifier.offer_client_auth());
        assert!(!verifier.client_auth_mandatory());
        assert_eq!(verifier.root_hint_subjects().len(), 1);
    }

    /// Presents peer-a's certificate but signs with peer-b's key.
    #[derive(Debug)]
    struct Impostor(Arc<rustls::sign::CertifiedKey>);

    impl rustls::client::ResolvesClientCert for Impostor {
        fn resolve(
            &self,
            _root_hint_subjects: &[&[u8]],
            _sigschemes: &[SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }

        fn has_certs(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn peer_presenting_a_certificate_without_its_key_fails_the_handshake() {
        let provider = provider();
        let stolen_cert = identity("peer-a").chain().to_vec();
        let own_key = provider
            .key_provider
            .load_private_key(identity("peer-b").key().clone_key())
            .expect("key loads");
        let impostor = Impostor(Arc::new(rustls::sign::CertifiedKey::new(
            stolen_cert,
            own_key,
        )));
        let verifier = DeferServerCertCheck {
            algorithms: provider.signature_verification_algorithms,
        };
        let client = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(impostor));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let acceptor = TlsAcceptor::from(gateway_server(TlsVersions::default()));
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            acceptor.accept(tcp).await.map(|_| ())
        });
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("smtp.gateway.test.mssante.fr").expect("valid name");
        // In TLS 1.3 the client may finish before the server checks its CertificateVerify;
        // what matters is that the server refuses the connection.
        if let Ok(mut tls) = TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
        {
            let _ = tls.write_all(b"hello").await;
            let _ = tls.flush().await;
        }
        let server_result = server_task.await.expect("server task");
        let err = server_result.expect_err("the impostor must be refused");
        assert!(err.to_string().contains("BadSignature"), "{err}");
    }
}
