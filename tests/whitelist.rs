//! The whitelist as an operator meets it: the real signed production list of 2025-02-28,
//! tampered copies, and lists signed by a generated test PKI.
use mssante_gateway::whitelist::signature::{
    verify_enveloped, ChainCheck, SignatureError, SignerIdentity, VerifyOptions,
};

const REAL: &str = include_str!("fixtures/whitelist/listeblanchemssante-2025-02-28-signed.xml");
const TRUNCATED: &str = include_str!("fixtures/whitelist/truncated-bad-digest.xml");

/// The IGC Santé production root is not in the repository, so the real file is checked
/// without the chain: digest, signature value and signer identity only.
fn without_chain() -> VerifyOptions<'static> {
    VerifyOptions {
        chain: ChainCheck::SkipInsecure,
        signer: SignerIdentity::production(),
    }
}

#[test]
fn real_production_list_signature_verifies() {
    let signer = verify_enveloped(REAL, &without_chain()).expect("the real list verifies");
    assert_eq!(signer.subject.cn.as_deref(), Some("alb.mssante.fr"));
    assert_eq!(
        signer.subject.o.as_deref(),
        Some("CAPGEMINI TECHNOLOGY SERVICES")
    );
    assert!(!signer.chain_verified);
    assert_eq!(signer.not_after.year(), 2026);
}

#[test]
fn truncated_list_with_stale_digest_is_refused() {
    match verify_enveloped(TRUNCATED, &without_chain()) {
        Err(SignatureError::DigestMismatch { expected, computed }) => {
            assert_eq!(expected, "JZO4I3vo9nf8Pl6G2h0ecqHNng8EKEfNjoMa6kQ3NyQ=");
            assert_ne!(expected, computed);
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
}

#[test]
fn real_list_with_one_dn_edited_is_refused() {
    let original = "O=GIP SESAN,ST=Paris(75)";
    assert!(REAL.contains(original));
    let edited = REAL.replacen(original, "O=GIP SESAN,ST=Paris (75)", 1);
    assert!(matches!(
        verify_enveloped(&edited, &without_chain()),
        Err(SignatureError::DigestMismatch { .. })
    ));
}

#[test]
fn real_list_signed_by_someone_else_is_refused() {
    let opts = VerifyOptions {
        chain: ChainCheck::SkipInsecure,
        signer: SignerIdentity {
            cn: "alb.mssante.fr".into(),
            o: "SOMEONE ELSE".into(),
        },
    };
    assert!(matches!(
        verify_enveloped(REAL, &opts),
        Err(SignatureError::SignerMismatch { .. })
    ));
}

#[test]
fn real_list_without_its_signature_is_refused() {
    let start = REAL.find("<Signature ").expect("signature");
    let end = REAL.find("</Signature>").expect("signature end") + "</Signature>".len();
    let unsigned = format!("{}{}", &REAL[..start], &REAL[end..]);
    assert_eq!(
        verify_enveloped(&unsigned, &without_chain()).err(),
        Some(SignatureError::MissingSignature)
    );
}

#[test]
fn real_list_with_altered_signature_value_is_refused() {
    let edited = REAL.replacen("<SignatureValue>SjYpc4O/", "<SignatureValue>SjYpc4P/", 1);
    assert_eq!(
        verify_enveloped(&edited, &without_chain()).err(),
        Some(SignatureError::BadSignatureValue)
    );
}

// ---------------------------------------------------------------------------------------
// The whole pipeline on the real list.

use std::sync::OnceLock;

use mssante_gateway::trust::dn::SubjectDn;
use mssante_gateway::whitelist::{load_and_verify, sign_enveloped, SigningKey, WhitelistError};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};

const REAL_SIGNER_DER: &[u8] = include_bytes!("fixtures/whitelist/signer-alb.mssante.fr.der");

fn dn(s: &str) -> SubjectDn {
    SubjectDn::parse(s).expect("dn")
}

#[test]
fn real_list_loads_with_the_documented_counts() {
    let wl = load_and_verify(REAL.as_bytes(), &without_chain()).expect("loads");
    assert_eq!(wl.entry_count(), 6_494);
    assert_eq!(wl.domain_count(), 4_944);
    assert_eq!(wl.dn_text_count(), 391);
    // Quoted/unquoted and 'Paris(75)'/'Paris (75)' spellings of one subject merge.
    assert!(wl.dn_count() < 391, "{}", wl.dn_count());
    assert!(wl.warnings().is_empty(), "{:?}", wl.warnings());
    assert_eq!(
        wl.generated().to_string(),
        "2025-02-28 15:42:07.0 +00:00:00"
    );
    let signer = wl.signer().expect("signed");
    assert_eq!(signer.certificate_der, REAL_SIGNER_DER);
}

#[test]
fn real_list_lookups_follow_the_operators_certificates() {
    let wl = load_and_verify(REAL.as_bytes(), &without_chain()).expect("loads");
    assert_eq!(wl.entries_for_domain("15-20.mssante.fr").len(), 5);
    let sesan = dn("CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR");
    assert!(wl.domain_served_by("15-20.mssante.fr", &sesan));
    assert!(wl.is_listed_dn(&sesan));
    // The list also spells this subject 'ST=Paris(75)': both spellings are one DN.
    assert!(wl.domains_for_dn(&sesan).len() > 1);
    let other_ou = dn("CN=smtp-1.sesan.santnet.com,OU=1750048887,O=GIP SESAN,ST=Paris (75),C=FR");
    assert!(!wl.is_listed_dn(&other_ou));
    assert!(!wl.domain_served_by("15-20.mssante.fr", &other_ou));
    let limoges =
        dn("CN=mss.chu-limoges.fr,OU=1870000015,O=C H U DE LIMOGES,ST=Haute-Vienne(87),C=FR");
    assert!(wl.is_listed_dn(&limoges));
    let adista = dn(
        "CN=smtp-1.mssante.adista.fr,OU=332315971500305,O=ADISTA,ST=Meurthe et Moselle (54),C=FR",
    );
    assert!(wl.is_listed_dn(&adista));
    assert!(!wl.is_listed_domain("not-listed.mssante.fr"));
}

#[test]
fn real_list_keeps_entities_and_non_ascii_text() {
    let wl = load_and_verify(REAL.as_bytes(), &without_chain()).expect("loads");
    assert!(wl
        .entries()
        .iter()
        .any(|e| e.description.contains("AGE & VIE")));
    assert!(wl
        .entries()
        .iter()
        .any(|e| e.responsable_contact.contains("mssante@wraptor.fr\n")));
    assert!(wl.entries().iter().any(|e| e.dn_text.contains("Rhône")));
}

#[test]
fn load_refuses_bytes_that_are_not_utf8() {
    let mut bytes = REAL.as_bytes().to_vec();
    bytes[200] = 0xff;
    assert!(matches!(
        load_and_verify(&bytes, &without_chain()),
        Err(WhitelistError::NotUtf8 { valid_up_to: 200 })
    ));
}

// ---------------------------------------------------------------------------------------
// A generated PKI that mimics IGC Santé: root → intermediate → signer (RSA-2048, SHA-256).

struct TestPki {
    root: CertificateDer<'static>,
    intermediate: CertificateDer<'static>,
    other_root: CertificateDer<'static>,
    signer_cert: CertificateDer<'static>,
    signer_key: Vec<u8>,
    /// A web server certificate for `localhost`, to serve lists over HTTPS.
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
}

fn ca_params(cn: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CountryName, "FR");
    name.push(rcgen::DnType::OrganizationName, "TEST ASIP-SANTE");
    name.push(rcgen::DnType::CommonName, cn);
    params.distinguished_name = name;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params
}

fn rsa_key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key")
}

fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let root_key = rsa_key();
        let root_params = ca_params("TEST AC RACINE IGC-SANTE ELEMENTAIRE");
        let root = root_params.self_signed(&root_key).expect("root");
        let root_issuer = rcgen::Issuer::from_params(&root_params, &root_key);

        let int_key = rsa_key();
        let int_params = ca_params("TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS");
        let intermediate = int_params
            .signed_by(&int_key, &root_issuer)
            .expect("intermediate");
        let int_issuer = rcgen::Issuer::from_params(&int_params, &int_key);

        let signer_key = rsa_key();
        let mut params = rcgen::CertificateParams::new(vec!["whitelist-signer.test".to_string()])
            .expect("params");
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CountryName, "FR");
        name.push(rcgen::DnType::StateOrProvinceName, "Paris (75)");
        name.push(rcgen::DnType::OrganizationName, "TEST MSSANTE SIGNER");
        name.push(rcgen::DnType::OrganizationalUnitName, "312345678900012");
        name.push(rcgen::DnType::CommonName, "whitelist-signer.test");
        params.distinguished_name = name;
        params.not_before = time::macros::datetime!(2024-01-01 0:00 UTC);
        params.not_after = time::macros::datetime!(2030-01-01 0:00 UTC);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let signer_cert = params.signed_by(&signer_key, &int_issuer).expect("signer");

        let server_key = rsa_key();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params.signed_by(&server_key, &int_issuer).expect("server");

        let other_key = rsa_key();
        let other_root = ca_params("SOME OTHER ROOT")
            .self_signed(&other_key)
            .expect("other root");
        TestPki {
            root: root.der().clone(),
            intermediate: intermediate.der().clone(),
            other_root: other_root.der().clone(),
            signer_cert: signer_cert.der().clone(),
            signer_key: signer_key.serialize_der(),
            server_cert: server_cert.der().clone(),
            server_key: server_key.serialize_der(),
        }
    })
}

fn anchor(der: &CertificateDer<'_>) -> TrustAnchor<'static> {
    webpki::anchor_from_trusted_cert(der)
        .expect("anchor")
        .to_owned()
}

fn test_signer() -> SignerIdentity {
    SignerIdentity {
        cn: "whitelist-signer.test".into(),
        o: "TEST MSSANTE SIGNER".into(),
    }
}

/// 2025-03-01, inside the test signer's validity.
fn march_2025() -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_740_787_200))
}

fn unsigned_real() -> String {
    let start = REAL.find("<Signature ").expect("signature");
    let end = REAL.find("</Signature>").expect("signature end") + "</Signature>".len();
    format!("{}{}", &REAL[..start], &REAL[end..])
}

fn signed_sample() -> &'static str {
    static SIGNED: OnceLock<String> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let key = SigningKey::from_pkcs8_der(&pki().signer_key).expect("key");
        sign_enveloped(&unsigned_real(), &key, &pki().signer_cert).expect("signs")
    })
}

#[test]
fn a_list_signed_by_the_test_signer_verifies_through_its_chain() {
    let anchors = [anchor(&pki().root)];
    let intermediates = [pki().intermediate.clone()];
    let mut opts = VerifyOptions::new(&anchors, &intermediates, march_2025());
    opts.signer = test_signer();
    let wl = load_and_verify(signed_sample().as_bytes(), &opts).expect("verifies");
    assert_eq!(wl.entry_count(), 6_494);
    assert_eq!(wl.domain_count(), 4_944);
    let signer = wl.signer().expect("signer");
    assert!(signer.chain_verified);
    assert_eq!(signer.subject.cn.as_deref(), Some("whitelist-signer.test"));
}

#[test]
fn editing_one_dn_of_a_signed_list_breaks_it() {
    let anchors = [anchor(&pki().root)];
    let intermediates = [pki().intermediate.clone()];
    let mut opts = VerifyOptions::new(&anchors, &intermediates, march_2025());
    opts.signer = test_signer();
    let edited = signed_sample().replacen("OU=318310021300028", "OU=318310021300029", 1);
    assert!(matches!(
        load_and_verify(edited.as_bytes(), &opts),
        Err(WhitelistError::Signature(
            SignatureError::DigestMismatch { .. }
        ))
    ));
}

#[test]
fn a_signer_outside_the_configured_anchors_is_not_trusted() {
    let anchors = [anchor(&pki().other_root)];
    let intermediates = [pki().intermediate.clone()];
    let mut opts = VerifyOptions::new(&anchors, &intermediates, march_2025());
    opts.signer = test_signer();
    assert!(matches!(
        verify_enveloped(signed_sample(), &opts),
        Err(SignatureError::SignerNotTrusted(_))
    ));
}

#[test]
fn a_signer_without_its_intermediate_is_not_trusted() {
    let anchors = [anchor(&pki().root)];
    let mut opts = VerifyOptions::new(&anchors, &[], march_2025());
    opts.signer = test_signer();
    assert!(matches!(
        verify_enveloped(signed_sample(), &opts),
        Err(SignatureError::SignerNotTrusted(_))
    ));
}

#[test]
fn an_expired_signer_is_not_trusted() {
    let anchors = [anchor(&pki().root)];
    let intermediates = [pki().intermediate.clone()];
    let year_2031 = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_924_992_000));
    let mut opts = VerifyOptions::new(&anchors, &intermediates, year_2031);
    opts.signer = test_signer();
    assert!(matches!(
        verify_enveloped(signed_sample(), &opts),
        Err(SignatureError::SignerNotTrusted(_))
    ));
}

#[test]
fn a_trusted_signer_that_is_not_the_configured_one_is_refused() {
    let anchors = [anchor(&pki().root)];
    let intermediates = [pki().intermediate.clone()];
    // Default identity: the production signer alb.mssante.fr.
    let opts = VerifyOptions::new(&anchors, &intermediates, march_2025());
    assert!(matches!(
        verify_enveloped(signed_sample(), &opts),
        Err(SignatureError::SignerMismatch { .. })
    ));
}

#[test]
fn the_real_list_does_not_chain_to_test_anchors() {
    let anchors = [anchor(&pki().root)];
    let intermediates = [pki().intermediate.clone()];
    let opts = VerifyOptions::new(&anchors, &intermediates, march_2025());
    assert!(matches!(
        verify_enveloped(REAL, &opts),
        Err(SignatureError::SignerNotTrusted(_))
    ));
}

#[test]
fn a_signed_list_cannot_be_signed_again() {
    let key = SigningKey::from_pkcs8_der(&pki().signer_key).expect("key");
    assert_eq!(
        sign_enveloped(REAL, &key, &pki().signer_cert).err(),
        Some(SignatureError::AlreadySigned)
    );
}

#[test]
fn a_small_hand_written_list_round_trips_through_signing() {
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListeBlancheMSSante xmlns=\"https://listeblanche.mssante.fr/schema\">\n  <DateDeGeneration>2026-01-01T00:00:00Z</DateDeGeneration>\n  <ListeDomaines>\n    <Domaine>\n      <Nom>ch-test.mssante.fr</Nom>\n      <Description>Test &amp; démo\r\n</Description>\n      <DNCertificatOperateur>CN=mss.ch-test.fr,OU=1750000000,O=\"CH  TEST\",ST=Paris(75),C=FR</DNCertificatOperateur>\n    </Domaine>\n  </ListeDomaines>\n</ListeBlancheMSSante>\n";
    let key = SigningKey::from_pkcs8_der(&pki().signer_key).expect("key");
    let signed = sign_enveloped(xml, &key, &pki().signer_cert).expect("signs");
    let anchors = [anchor(&pki().root)];
    let intermediates = [pki().intermediate.clone()];
    let mut opts = VerifyOptions::new(&anchors, &intermediates, march_2025());
    opts.signer = test_signer();
    let wl = load_and_verify(signed.as_bytes(), &opts).expect("verifies");
    assert!(wl.domain_served_by(
        "CH-TEST.mssante.fr",
        &dn("CN=mss.ch-test.fr,OU=1750000000,O=CH TEST,ST=Paris (75),C=FR")
    ));
    let tampered = signed.replace("\"CH  TEST\"", "\"CH TEST\"");
    assert!(matches!(
        verify_enveloped(&tampered, &opts),
        Err(SignatureError::DigestMismatch { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// The cache file.

#[test]
fn the_cached_list_is_verified_again_at_start_up() {
    use mssante_gateway::whitelist::store;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("listeblanchemssante.xml");
    assert!(
        store::load_verified(&path, store::DEFAULT_MAX_BYTES, &without_chain())
            .expect("no cache yet")
            .is_none()
    );
    store::save(&path, REAL.as_bytes()).expect("saves");
    let wl = store::load_verified(&path, store::DEFAULT_MAX_BYTES, &without_chain())
        .expect("loads")
        .expect("cached");
    assert_eq!(wl.entry_count(), 6_494);

    // Over the bound downloads obey: refused before it is read whole.
    assert!(matches!(
        store::load_verified(&path, REAL.len() - 1, &without_chain()),
        Err(store::StoreError::TooLarge { .. })
    ));

    std::fs::write(&path, TRUNCATED).expect("corrupt the cache");
    assert!(matches!(
        store::load_verified(&path, store::DEFAULT_MAX_BYTES, &without_chain()),
        Err(store::StoreError::Invalid { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Downloading over HTTPS from a local server with a test IGC-like certificate.

mod fetch {
    use super::*;
    use mssante_gateway::whitelist::fetch::{
        tls_config, FetchConfig, FetchError, FetchOutcome, Fetcher,
    };
    use mssante_gateway::whitelist::Whitelist;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `body` with an ETag; answers 304 to a request carrying If-None-Match.
    /// Returns the port and the number of full (200) answers given.
    async fn serve(body: Vec<u8>) -> (u16, Arc<AtomicUsize>) {
        let pki = pki();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(pki.server_key.clone().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![pki.server_cert.clone(), pki.intermediate.clone()], key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let full = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&full);
        let body = Arc::new(body);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let body = Arc::clone(&body);
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    let response = if head.contains("if-none-match: \"v1\"") {
                        b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\nconnection: close\r\n\r\n"
                            .to_vec()
                    } else {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\netag: \"v1\"\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&body);
                        r
                    };
                    let _ = tls.write_all(&response).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, full)
    }

    fn opts<'a>(
        anchors: &'a [TrustAnchor<'a>],
        intermediates: &'a [CertificateDer<'a>],
    ) -> VerifyOptions<'a> {
        let mut opts = VerifyOptions::new(anchors, intermediates, march_2025());
        opts.signer = test_signer();
        opts
    }

    fn fetcher(port: u16, root: &CertificateDer<'_>, cache: Option<std::path::PathBuf>) -> Fetcher {
        let mut config =
            FetchConfig::new(format!("https://localhost:{port}/listeblanchemssante.xml"));
        config.cache_path = cache;
        Fetcher::new(config, tls_config(&[anchor(root)]).expect("tls")).expect("fetcher")
    }

    #[tokio::test]
    async fn downloads_verifies_caches_and_swaps_then_asks_conditionally() {
        let (port, full) = serve(signed_sample().as_bytes().to_vec()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("liste.xml");
        let mut fetcher = fetcher(port, &pki().root, Some(cache.clone()));
        let anchors = [anchor(&pki().root)];
        let intermediates = [pki().intermediate.clone()];
        let opts = opts(&anchors, &intermediates);

        let outcome = fetcher
            .refresh(&Whitelist::empty(), &opts)
            .await
            .expect("refresh");
        let FetchOutcome::Updated(list) = outcome else {
            panic!("expected a new list, got {outcome:?}");
        };
        assert_eq!(list.entry_count(), 6_494);
        assert_eq!(
            std::fs::read(&cache).expect("cached"),
            signed_sample().as_bytes()
        );

        let outcome = fetcher.refresh(&list, &opts).await.expect("refresh");
        assert!(matches!(outcome, FetchOutcome::Unchanged));
        assert_eq!(full.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_tampered_download_leaves_the_current_list_in_place() {
        let (port, _) = serve(TRUNCATED.as_bytes().to_vec()).await;
        let mut fetcher = fetcher(port, &pki().root, None);
        let anchors = [anchor(&pki().root)];
        let intermediates = [pki().intermediate.clone()];
        let result = fetcher
            .refresh(&Whitelist::empty(), &opts(&anchors, &intermediates))
            .await;
        assert!(matches!(result, Err(FetchError::Invalid(_))), "{result:?}");
    }

    #[tokio::test]
    async fn an_older_list_does_not_replace_a_newer_one() {
        let older = unsigned_real().replace(
            "<DateDeGeneration>2025-02-28T15:42:07Z",
            "<DateDeGeneration>2024-01-01T00:00:00Z",
        );
        let key = SigningKey::from_pkcs8_der(&pki().signer_key).expect("key");
        let older = sign_enveloped(&older, &key, &pki().signer_cert).expect("signs");
        let (port, _) = serve(older.into_bytes()).await;
        let mut fetcher = fetcher(port, &pki().root, None);
        let anchors = [anchor(&pki().root)];
        let intermediates = [pki().intermediate.clone()];
        let opts = opts(&anchors, &intermediates);
        let current = load_and_verify(signed_sample().as_bytes(), &opts).expect("current");
        let result = fetcher.refresh(&current, &opts).await;
        assert!(
            matches!(result, Err(FetchError::Older { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_server_outside_the_espace_anchors_is_refused() {
        let (port, full) = serve(signed_sample().as_bytes().to_vec()).await;
        let mut fetcher = fetcher(port, &pki().other_root, None);
        let anchors = [anchor(&pki().root)];
        let intermediates = [pki().intermediate.clone()];
        let result = fetcher
            .refresh(&Whitelist::empty(), &opts(&anchors, &intermediates))
            .await;
        assert!(
            matches!(result, Err(FetchError::Transport { .. })),
            "{result:?}"
        );
        assert_eq!(full.load(Ordering::SeqCst), 0);
    }
}

// ---------------------------------------------------------------------------------------
// Signature profiles other than ANS's are refused before any cryptography.

fn signature_element() -> &'static str {
    let start = REAL.find("<Signature ").expect("signature");
    let end = REAL.find("</Signature>").expect("signature end") + "</Signature>".len();
    &REAL[start..end]
}

#[test]
fn other_algorithms_and_transforms_are_unsupported() {
    let cases = [
        (
            "xmldsig-more#rsa-sha256\"",
            "xmldsig#rsa-sha1\"",
            "SignatureMethod",
        ),
        (
            "<Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>",
            "",
            "Transforms",
        ),
        ("<Reference URI=\"\">", "<Reference URI=\"#x\">", "Reference URI"),
        ("xmlenc#sha256", "xmldsig#sha1", "DigestMethod"),
        (
            "<CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
            "<CanonicalizationMethod Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315\"/>",
            "CanonicalizationMethod",
        ),
        (
            "<CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
            "<CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"><InclusiveNamespaces xmlns=\"http://www.w3.org/2001/10/xml-exc-c14n#\" PrefixList=\"a\"/></CanonicalizationMethod>",
            "InclusiveNamespaces",
        ),
    ];
    for (from, to, what) in cases {
        assert!(REAL.contains(from), "{from}");
        let edited = REAL.replacen(from, to, 1);
        match verify_enveloped(&edited, &without_chain()) {
            Err(SignatureError::Unsupported { what: w, .. }) => assert_eq!(w, what),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn a_signature_not_under_the_document_element_or_repeated_is_refused() {
    let moved = REAL.replacen(signature_element(), "", 1).replacen(
        "</ListeDomaines>",
        &format!("{}</ListeDomaines>", signature_element()),
        1,
    );
    assert!(matches!(
        verify_enveloped(&moved, &without_chain()),
        Err(SignatureError::NotEnveloped { .. })
    ));
    let twice = REAL.replacen(
        "</ListeBlancheMSSante>",
        &format!("{}</ListeBlancheMSSante>", signature_element()),
        1,
    );
    assert_eq!(
        verify_enveloped(&twice, &without_chain()).err(),
        Some(SignatureError::MultipleSignatures)
    );
}

#[test]
fn a_domain_added_after_signing_is_refused() {
    let added = REAL.replacen(
        "<ListeDomaines>",
        "<ListeDomaines><Domaine><Nom>evil.mssante.fr</Nom><DNCertificatOperateur>CN=evil</DNCertificatOperateur></Domaine>",
        1,
    );
    assert!(matches!(
        load_and_verify(added.as_bytes(), &without_chain()),
        Err(WhitelistError::Signature(
            SignatureError::DigestMismatch { .. }
        ))
    ));
}

#[test]
fn the_ans_audit_domains_are_listed() {
    let wl = load_and_verify(REAL.as_bytes(), &without_chain()).expect("loads");
    for probe in [
        "cert-valide-audit",
        "cert-expire-audit",
        "cert-revoque-audit",
        "cert-non-igc-audit",
        "cert-no-match-audit",
        "cert-cn-diff-dn-audit",
        "sans-tls-audit",
    ] {
        assert!(
            wl.is_listed_domain(&format!("{probe}.espacedeconfiance.mssante.fr")),
            "{probe}"
        );
    }
}
