//! The trust-space policy as ANS audits it: the `*-audit` domains of the production list,
//! mirrored in the test PKI's sample liste blanche (see `certs-test/README.md`), each
//! played by the test certificate of that case. Only the valid one may deliver.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{certs_dir, Client, TestGateway, IO_TIMEOUT, LOCAL_DOMAIN};
use mssante_gateway::tools::sample_whitelist::{self, ListEntry};

fn rcpt() -> String {
    format!("bob@{LOCAL_DOMAIN}")
}

/// Connects, EHLO as `helo`, STARTTLS presenting `peer`'s certificate, EHLO again.
async fn peer(gw: &TestGateway, peer: &str, helo: &str) -> Client {
    let mut c = gw.connect().await;
    c.send(&format!("EHLO {helo}")).await;
    c.expect_code(250).await;
    c.starttls(Some(peer)).await;
    c.send(&format!("EHLO {helo}")).await;
    c.expect_code(250).await;
    c
}

/// `cert`'s peer, saying EHLO `helo`, gets a message from x@peer-a to bob accepted.
async fn accepted(gw: &TestGateway, cert: &str, helo: &str) {
    let mut c = peer(gw, cert, helo).await;
    c.send_message(
        "x@peer-a.test.mssante.fr",
        &[&rcpt()],
        b"Subject: ok\r\n\r\nok\r\n",
    )
    .await;
}

/// A MAIL FROM the gateway must refuse: who connects, what they send, what they are told.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    /// The test PKI certificate presented after STARTTLS; `None`: no STARTTLS at all.
    cert: Option<&'static str>,
    helo: &'static str,
    from: &'static str,
    code: u16,
    enhanced: &'static str,
    /// Counted under `mssante_rejections_total{stage="mail", reason}`.
    reason: &'static str,
}

/// peer-a as itself, sending for its own domain, turned down with 550 5.7.1: what most
/// cases change a field or two of.
const PEER_A: Refusal = Refusal {
    cert: Some("peer-a"),
    helo: "smtp.peer-a.test.mssante.fr",
    from: "x@peer-a.test.mssante.fr",
    code: 550,
    enhanced: "5.7.1",
    reason: "",
};

/// peer-revoked as itself, for peer-a's domain: its certificate is on the CRL.
const REVOKED: Refusal = Refusal {
    cert: Some("peer-revoked"),
    helo: "smtp.peer-revoked.test.mssante.fr",
    reason: "client_cert_revoked",
    ..PEER_A
};

impl Refusal {
    /// A connection as this case's peer: EHLO, then STARTTLS and EHLO again when it has
    /// a certificate.
    async fn connect(&self, gw: &TestGateway) -> Client {
        match self.cert {
            Some(cert) => peer(gw, cert, self.helo).await,
            None => {
                let mut c = gw.connect().await;
                c.send(&format!("EHLO {}", self.helo)).await;
                c.expect_code(250).await;
                c
            }
        }
    }

    /// On `c`: MAIL FROM gets the expected reply and is counted under the reason.
    async fn refused_on(&self, gw: &TestGateway, c: &mut Client) {
        let before = gw.rejections("mail", self.reason);
        c.send(&format!("MAIL FROM:<{}>", self.from)).await;
        c.expect_for(self.code, self.enhanced, self).await;
        assert_eq!(
            gw.rejections("mail", self.reason),
            before + 1,
            "{self:?}: reason not counted"
        );
    }

    /// On a new connection.
    async fn check(&self, gw: &TestGateway) {
        let mut c = self.connect(gw).await;
        self.refused_on(gw, &mut c).await;
    }
}

/// The refused cases of the ANS audit: each `*-audit` domain of the list with the
/// certificate (or the lack of TLS) that plays it.
const AUDIT_REFUSALS: &[Refusal] = &[
    // cert-expire-audit.
    Refusal {
        cert: Some("peer-expired"),
        helo: "smtp.peer-expired.test.mssante.fr",
        from: "audit@cert-expire-audit.test.mssante.fr",
        reason: "client_cert_expired",
        ..PEER_A
    },
    // cert-revoque-audit.
    Refusal {
        from: "audit@cert-revoque-audit.test.mssante.fr",
        ..REVOKED
    },
    // cert-non-igc-audit.
    Refusal {
        cert: Some("peer-foreign"),
        helo: "smtp.peer-foreign.test.mssante.fr",
        from: "audit@cert-non-igc-audit.test.mssante.fr",
        reason: "client_cert_untrusted",
        ..PEER_A
    },
    // cert-no-match-audit: listed with peer-b's DN, sent with peer-a's certificate.
    Refusal {
        from: "audit@cert-no-match-audit.test.mssante.fr",
        reason: "sender_dn_mismatch",
        ..PEER_A
    },
    // cert-cn-diff-dn-audit: same O, OU and ST as the listed DN, another CN.
    Refusal {
        cert: Some("peer-a-cn-diff"),
        helo: "other.peer-a.test.mssante.fr",
        from: "audit@cert-cn-diff-dn-audit.test.mssante.fr",
        reason: "dn_not_listed",
        ..PEER_A
    },
    // sans-tls-audit.
    Refusal {
        cert: None,
        from: "audit@sans-tls-audit.test.mssante.fr",
        code: 530,
        enhanced: "5.7.0",
        reason: "tls_required",
        ..PEER_A
    },
];

#[tokio::test]
async fn ans_audit_matrix_only_the_valid_certificate_delivers() {
    let gw = TestGateway::start().await;

    // cert-valide-audit: accepted and spooled.
    let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
    c.send_message(
        "audit@cert-valide-audit.test.mssante.fr",
        &[&rcpt()],
        b"Subject: audit\r\n\r\nvalide\r\n",
    )
    .await;
    c.quit().await;
    assert_eq!(gw.spooled_messages().len(), 1);

    for case in AUDIT_REFUSALS {
        case.check(&gw).await;
    }

    assert_eq!(
        gw.spooled_messages().len(),
        1,
        "only the valid case delivered"
    );
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn a_listed_operator_cannot_send_for_another_operators_domain() {
    let gw = TestGateway::start().await;
    let mut c = PEER_A.connect(&gw).await;
    for refusal in [
        Refusal {
            from: "x@peer-b.test.mssante.fr",
            reason: "sender_dn_mismatch",
            ..PEER_A
        },
        Refusal {
            from: "x@not-listed.mssante.fr",
            reason: "sender_domain_not_listed",
            ..PEER_A
        },
    ] {
        refusal.refused_on(&gw, &mut c).await;
    }
    // The right domain still works on the same connection.
    c.send_message(
        "x@peer-a.test.mssante.fr",
        &[&rcpt()],
        b"Subject: ok\r\n\r\nok\r\n",
    )
    .await;
}

#[tokio::test]
async fn relay_to_a_foreign_domain_is_refused() {
    let gw = TestGateway::start().await;
    let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
    c.send("MAIL FROM:<x@peer-a.test.mssante.fr>").await;
    c.expect(250, "2.1.0").await;
    let before = gw.rejections("rcpt", "relay_denied");
    for target in [
        "y@peer-b.test.mssante.fr",
        "y@example.org",
        "y@gateway.test.mssante.fr.evil.org",
    ] {
        c.send(&format!("RCPT TO:<{target}>")).await;
        c.expect(550, "5.7.1").await;
    }
    assert_eq!(gw.rejections("rcpt", "relay_denied"), before + 3);
}

#[tokio::test]
async fn null_reverse_path_from_a_listed_dn_is_accepted() {
    let gw = TestGateway::start().await;
    let mut c = peer(&gw, "peer-b", "smtp.peer-b.test.mssante.fr").await;
    c.send_message(
        "",
        &[&rcpt()],
        b"Subject: Delivery Status Notification\r\n\r\nbounce\r\n",
    )
    .await;
    let stored = gw.spooled_messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].envelope.mail_from, "");
}

#[tokio::test]
async fn null_reverse_path_from_an_unlisted_dn_is_refused() {
    let gw = TestGateway::start().await;
    Refusal {
        cert: Some("peer-a-cn-diff"),
        helo: "other.peer-a.test.mssante.fr",
        from: "",
        reason: "dn_not_listed",
        ..PEER_A
    }
    .check(&gw)
    .await;
}

#[tokio::test]
async fn ehlo_not_matching_the_cn_is_refused_in_enforce_mode() {
    let gw = TestGateway::start().await;
    Refusal {
        helo: "mail.elsewhere.example",
        reason: "ehlo_cn_mismatch",
        ..PEER_A
    }
    .check(&gw)
    .await;
    // Case and a trailing dot do not matter.
    accepted(&gw, "peer-a", "SMTP.Peer-A.test.mssante.fr.").await;
}

#[tokio::test]
async fn ehlo_not_matching_the_cn_is_only_logged_in_log_mode() {
    let gw = TestGateway::start_with(|t| {
        let mut policy = toml::Table::new();
        policy.insert("ehlo_check".into(), "log".into());
        t.insert("policy".into(), policy.into());
    })
    .await;
    accepted(&gw, "peer-a", "mail.elsewhere.example").await;
    assert_eq!(gw.rejections("mail_logged", "ehlo_cn_mismatch"), 1);
    assert_eq!(gw.rejections("mail", "ehlo_cn_mismatch"), 0);
}

/// Writes a list signed by the test signer with `entries` into `dir`.
fn signed_list(dir: &Path, entries: &[ListEntry]) -> std::path::PathBuf {
    let xml = sample_whitelist::render(entries, time::OffsetDateTime::now_utc());
    let signed = sample_whitelist::sign_with_test_signer(&certs_dir(), &xml).expect("sign");
    let path = dir.join("liste.xml");
    std::fs::write(&path, signed).expect("write list");
    path
}

fn use_list(path: &Path) -> impl FnOnce(&mut toml::Table) + '_ {
    move |t| {
        t["whitelist"]
            .as_table_mut()
            .expect("[whitelist]")
            .insert("cache".into(), path.to_string_lossy().into_owned().into());
    }
}

#[tokio::test]
async fn dn_variants_written_in_the_list_match_the_certificate() {
    // The ways the production list writes DNs: ", " separators, upper-case CN, a trailing
    // space, no space before the département code, RFC 1779 quotes, runs of spaces.
    let variants = [
        "CN=SMTP.PEER-A.TEST.MSSANTE.FR, OU=398765432400001, O=OPERATEUR PEER A, ST=Bas-Rhin(67), C=FR",
        "CN=smtp.peer-a.test.mssante.fr ,OU=398765432400001,O=\"OPERATEUR  PEER A\",ST=Bas-Rhin (67),C=FR",
    ];
    for dn in variants {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = signed_list(
            dir.path(),
            &[ListEntry {
                domain: "peer-a.test.mssante.fr".into(),
                description: "variant".into(),
                dn: dn.into(),
            }],
        );
        let gw = TestGateway::start_with(use_list(&list)).await;
        accepted(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
    }
}

#[tokio::test]
async fn a_dn_differing_only_in_ou_does_not_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = signed_list(
        dir.path(),
        &[ListEntry {
            domain: "peer-a.test.mssante.fr".into(),
            description: "other OU".into(),
            dn: "CN=smtp.peer-a.test.mssante.fr,OU=398765432400002,O=OPERATEUR PEER A,ST=Bas-Rhin (67),C=FR".into(),
        }],
    );
    let gw = TestGateway::start_with(use_list(&list)).await;
    Refusal {
        reason: "dn_not_listed",
        ..PEER_A
    }
    .check(&gw)
    .await;
}

#[tokio::test]
async fn a_stale_whitelist_defers_instead_of_judging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("liste.xml");
    std::fs::copy(certs_dir().join("whitelist.xml"), &cache).expect("copy");
    // Last confirmed two hours ago, the download fails, max_age is one hour.
    let file = std::fs::File::options()
        .write(true)
        .open(&cache)
        .expect("open");
    file.set_modified(SystemTime::now() - Duration::from_secs(7200))
        .expect("mtime");
    drop(file);
    let gw = TestGateway::start_with(|t| {
        let w = t["whitelist"].as_table_mut().expect("[whitelist]");
        w.insert("cache".into(), cache.to_string_lossy().into_owned().into());
        w.insert("fetch".into(), true.into());
        w.insert("url".into(), "https://127.0.0.1:9/liste.xml".into());
        w.insert("max_age".into(), "1h".into());
        w.insert("timeout".into(), "2s".into());
    })
    .await;
    Refusal {
        code: 451,
        enhanced: "4.7.1",
        reason: "whitelist_stale",
        ..PEER_A
    }
    .check(&gw)
    .await;
}

#[path = "common/dns_server.rs"]
mod dns_server;

mod fcrdns {
    use super::*;
    use dns_server::{DnsServer, RecordSpec};
    use mssante_gateway::dns::{DnsSettings, Resolver};
    use std::net::{IpAddr, Ipv4Addr};

    fn checking(mode: &'static str, dns: std::net::SocketAddr) -> impl FnOnce(&mut toml::Table) {
        move |t| {
            let mut policy = toml::Table::new();
            policy.insert("fcrdns".into(), mode.into());
            t.insert("policy".into(), policy.into());
            let mut d = toml::Table::new();
            d.insert(
                "name_servers".into(),
                toml::Value::Array(vec![dns.to_string().into()]),
            );
            d.insert("timeout".into(), "1s".into());
            d.insert("attempts".into(), 1.into());
            t.insert("dns".into(), d.into());
        }
    }

    fn resolver(dns: std::net::SocketAddr) -> Resolver {
        Resolver::new(&DnsSettings {
            name_servers: vec![dns],
            timeout: Duration::from_millis(500),
            attempts: 1,
            ..DnsSettings::default()
        })
        .expect("resolver")
    }

    // A documentation address (TEST-NET-1) as the peer: only its names are looked up, on
    // the loopback DNS server; no traffic goes to it.
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

    #[tokio::test]
    async fn only_forward_confirmed_names_count() {
        let dns = DnsServer::start(&[
            (
                "10.2.0.192.in-addr.arpa",
                RecordSpec::Ptr("smtp.peer-a.test.mssante.fr".into()),
            ),
            ("smtp.peer-a.test.mssante.fr", RecordSpec::A(PEER)),
        ]);
        let names = resolver(dns.addr)
            .confirmed_names(IpAddr::V4(PEER))
            .await
            .expect("lookup");
        assert_eq!(names, ["smtp.peer-a.test.mssante.fr"]);

        // A PTR name whose addresses do not lead back is not confirmed.
        let dns = DnsServer::start(&[
            (
                "10.2.0.192.in-addr.arpa",
                RecordSpec::Ptr("smtp.peer-a.test.mssante.fr".into()),
            ),
            (
                "smtp.peer-a.test.mssante.fr",
                RecordSpec::A(Ipv4Addr::new(192, 0, 2, 99)),
            ),
        ]);
        let names = resolver(dns.addr)
            .confirmed_names(IpAddr::V4(PEER))
            .await
            .expect("lookup");
        assert!(names.is_empty());

        // A silent name server is a temporary failure, not an absence.
        let silent = DnsServer::silent();
        let err = resolver(silent.addr)
            .confirmed_names(IpAddr::V4(PEER))
            .await
            .unwrap_err();
        assert!(!err.is_permanent(), "{err}");
    }

    #[tokio::test]
    async fn enforce_refuses_a_peer_whose_address_does_not_name_its_cn() {
        // Loopback peers resolve to `localhost` (RFC 6761, answered by the resolver itself),
        // which is not peer-a's CN.
        let dns = DnsServer::start(&[]);
        let gw = TestGateway::start_with(checking("enforce", dns.addr)).await;
        Refusal {
            reason: "fcrdns_mismatch",
            ..PEER_A
        }
        .check(&gw)
        .await;
    }

    #[tokio::test]
    async fn log_mode_only_counts_the_mismatch() {
        let dns = DnsServer::start(&[]);
        let gw = TestGateway::start_with(checking("log", dns.addr)).await;
        accepted(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
        assert_eq!(gw.rejections("mail_logged", "fcrdns_mismatch"), 1);
    }
}

mod crl {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A CRL of the test intermediate revoking the certificates of `peers`.
    fn crl(peers: &[&str], this: time::OffsetDateTime, next: time::OffsetDateTime) -> Vec<u8> {
        let serials: Vec<Vec<u8>> = peers
            .iter()
            .map(|p| {
                let certs = mssante_gateway::trust::pki::load_certificates(
                    &certs_dir().join(format!("{p}.pem")),
                )
                .expect("cert");
                let (_, x509) =
                    x509_parser::parse_x509_certificate(certs[0].as_ref()).expect("parse");
                x509.raw_serial().to_vec()
            })
            .collect();
        mssante_gateway::tools::test_pki::intermediate_crl(&certs_dir(), &serials, this, next)
            .expect("CRL")
    }

    /// A plain HTTP server answering every request with the current (status, body).
    async fn serve(state: Arc<Mutex<(u16, Vec<u8>)>>, hits: Arc<AtomicUsize>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let state = Arc::clone(&state);
                let hits = Arc::clone(&hits);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut req = Vec::new();
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let (status, body) = state.lock().expect("state").clone();
                    let mut resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    resp.extend_from_slice(&body);
                    let _ = s.write_all(&resp).await;
                    hits.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        port
    }

    fn crl_source(port: u16, file: &Path) -> impl FnOnce(&mut toml::Table) + '_ {
        move |t| {
            let tls = t["tls"].as_table_mut().expect("[tls]");
            // Only the downloaded CRL: the committed one would revoke peer-revoked anyway.
            tls.insert("crls".into(), toml::Value::Array(Vec::new()));
            let mut src = toml::Table::new();
            src.insert(
                "url".into(),
                format!("http://127.0.0.1:{port}/ACI-EL-ORG.crl").into(),
            );
            src.insert("file".into(), file.to_string_lossy().into_owned().into());
            tls.insert("crl_sources".into(), toml::Value::Array(vec![src.into()]));
            tls.insert("crl_refresh_interval".into(), "1h".into());
        }
    }

    /// `mssante_crl_fetch_total{outcome}`.
    fn fetches(gw: &TestGateway, outcome: &str) -> u64 {
        gw.metrics.crl_fetch_total.get(&[outcome])
    }

    async fn wait_for(gw: &TestGateway, outcome: &str) {
        let what = format!("a CRL fetch with outcome {outcome}");
        common::wait_for(&what, IO_TIMEOUT, || fetches(gw, outcome) > 0).await;
    }

    #[tokio::test]
    async fn a_crl_downloaded_from_its_distribution_point_revokes_a_peer() {
        let now = time::OffsetDateTime::now_utc();
        let body = crl(
            &["peer-b"],
            now - time::Duration::hours(1),
            now + time::Duration::days(7),
        );
        let state = Arc::new(Mutex::new((200, body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let port = serve(Arc::clone(&state), hits).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("aci-el-org.crl");
        let gw = TestGateway::start_with(crl_source(port, &file)).await;
        wait_for(&gw, "updated").await;
        assert!(file.is_file(), "the valid CRL is kept on disk");

        Refusal {
            cert: Some("peer-b"),
            helo: "smtp.peer-b.test.mssante.fr",
            from: "x@peer-b.test.mssante.fr",
            reason: "client_cert_revoked",
            ..PEER_A
        }
        .check(&gw)
        .await;
        // peer-a is not on this CRL.
        accepted(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
    }

    /// The metrics endpoint on a loopback port, for `/readyz`.
    fn with_metrics(t: &mut toml::Table) {
        let mut m = toml::Table::new();
        m.insert("listen".into(), "127.0.0.1:0".into());
        t.insert("metrics".into(), m.into());
    }

    /// Under `tls.revocation = "require"` (the default), a CA whose CRL was never loaded
    /// (its distribution point unreachable at start) gets every one of its peers deferred,
    /// the revoked one included, and the gateway says it is not ready; once the CRL
    /// arrives, the revoked peer is refused and the others are served.
    #[tokio::test]
    async fn without_a_crl_yet_every_peer_of_the_ca_is_deferred_until_one_arrives() {
        let now = time::OffsetDateTime::now_utc();
        let state = Arc::new(Mutex::new((503, Vec::new())));
        let port = serve(Arc::clone(&state), Arc::new(AtomicUsize::new(0))).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("aci-el-org.crl");
        let gw = TestGateway::start_with(|t| {
            crl_source(port, &file)(t);
            with_metrics(t);
            t["tls"]
                .as_table_mut()
                .expect("[tls]")
                .insert("crl_refresh_interval".into(), "1s".into());
        })
        .await;
        wait_for(&gw, "network").await;
        let addr = gw.gateway().metrics_addr.expect("metrics endpoint");
        assert!(
            common::http_get(addr, "/readyz").await.0.contains("503"),
            "not ready without the CRL"
        );
        let intermediate = mssante_gateway::trust::pki::load_certificates(
            &certs_dir().join("intermediate-ca.pem"),
        )
        .expect("intermediate");
        let (_, x509) =
            x509_parser::parse_x509_certificate(intermediate[0].as_ref()).expect("parse");
        let issuer = mssante_gateway::trust::verify::rfc4514(x509.subject());
        let present = |gw: &TestGateway| gw.metrics.crl_present.with_label_values(&[&issuer]).get();
        assert_eq!(present(&gw), 0);
        for (who, helo) in [
            ("peer-revoked", "smtp.peer-revoked.test.mssante.fr"),
            ("peer-a", "smtp.peer-a.test.mssante.fr"),
        ] {
            Refusal {
                cert: Some(who),
                helo,
                code: 451,
                enhanced: "4.7.1",
                reason: "crl_unavailable",
                ..PEER_A
            }
            .check(&gw)
            .await;
        }

        *state.lock().expect("state") = (
            200,
            crl(
                &["peer-revoked"],
                now - time::Duration::hours(1),
                now + time::Duration::days(7),
            ),
        );
        wait_for(&gw, "updated").await;
        common::wait_for("the CRL installed", IO_TIMEOUT, || present(&gw) == 1).await;
        assert!(common::http_get(addr, "/readyz").await.0.contains("200"));
        REVOKED.check(&gw).await;
        accepted(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
    }

    /// `tls.revocation = "best_effort"` keeps the former behaviour for a set-up without
    /// CRLs: a peer whose CA has none is served.
    #[tokio::test]
    async fn best_effort_serves_peers_of_a_ca_without_crl() {
        let gw = TestGateway::start_with(|t| {
            let tls = t["tls"].as_table_mut().expect("[tls]");
            tls.insert("crls".into(), toml::Value::Array(Vec::new()));
            tls.insert("revocation".into(), "best_effort".into());
        })
        .await;
        accepted(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
    }

    /// A reload that replaces the anchors is applied by every user of the trust store, and
    /// the next CRL update rebuilds the store from the reloaded settings instead of undoing
    /// them (it used to rebuild from the start-up files): the new hierarchy still rules.
    #[tokio::test]
    async fn a_crl_update_after_a_reload_keeps_the_reloaded_anchors() {
        let now = time::OffsetDateTime::now_utc();
        let first = crl(
            &[],
            now - time::Duration::hours(2),
            now + time::Duration::days(7),
        );
        let state = Arc::new(Mutex::new((200, first)));
        let port = serve(Arc::clone(&state), Arc::new(AtomicUsize::new(0))).await;
        let dir = tempfile::tempdir().expect("tempdir");
        // A second PKI with the same names (so its peer-a's DN is listed) and other keys.
        let other = dir.path().join("other-pki");
        mssante_gateway::tools::test_pki::generate(&other).expect("second PKI");
        let settings = |pki: std::path::PathBuf, crl_file: std::path::PathBuf| {
            move |t: &mut toml::Table| {
                crl_source(port, &crl_file)(t);
                let tls = t["tls"].as_table_mut().expect("[tls]");
                tls.insert("crl_refresh_interval".into(), "1s".into());
                // Between the reload and the first CRL of the new intermediate.
                tls.insert("revocation".into(), "best_effort".into());
                let file = |f: &str| toml::Value::from(pki.join(f).to_string_lossy().into_owned());
                tls.insert(
                    "anchors".into(),
                    toml::Value::Array(vec![file("anchors.pem")]),
                );
                tls.insert(
                    "intermediates".into(),
                    toml::Value::Array(vec![file("intermediate-ca.pem")]),
                );
            }
        };
        let gw = TestGateway::start_with(settings(certs_dir(), dir.path().join("first.crl"))).await;
        wait_for(&gw, "updated").await;

        async fn as_other_peer(gw: &TestGateway, pki: &Path) -> Client {
            let read = |f: &str| std::fs::read_to_string(pki.join(f)).expect("PKI file");
            let mut c = gw.connect().await;
            c.starttls_as(
                "smtp.peer-a.test.mssante.fr",
                common::identity_from_pem(&read("peer-a-chain.pem"), &read("peer-a.key")),
            )
            .await;
            c
        }
        let mut c = as_other_peer(&gw, &other).await;
        Refusal {
            reason: "client_cert_untrusted",
            ..PEER_A
        }
        .refused_on(&gw, &mut c)
        .await;

        // The operator moves to the other hierarchy (a new CRL file for its CA).
        gw.reload_with(settings(other.clone(), dir.path().join("second.crl")));
        let mut c = as_other_peer(&gw, &other).await;
        c.send("MAIL FROM:<x@peer-a.test.mssante.fr>").await;
        c.expect(250, "2.1.0").await;
        Refusal {
            reason: "client_cert_untrusted",
            ..PEER_A
        }
        .check(&gw)
        .await;

        // The distribution point now serves the new CA's CRL: the store is rebuilt.
        let updated = fetches(&gw, "updated");
        let second = mssante_gateway::tools::test_pki::intermediate_crl(
            &other,
            &[],
            now - time::Duration::hours(1),
            now + time::Duration::days(7),
        )
        .expect("CRL of the second PKI");
        *state.lock().expect("state") = (200, second);
        common::wait_for("a CRL update", IO_TIMEOUT, || {
            fetches(&gw, "updated") != updated
        })
        .await;
        common::wait_for("the CRL written", IO_TIMEOUT, || {
            dir.path().join("second.crl").is_file()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The reloaded hierarchy still rules, the start-up one is still out.
        let mut c = as_other_peer(&gw, &other).await;
        c.send("MAIL FROM:<x@peer-a.test.mssante.fr>").await;
        c.expect(250, "2.1.0").await;
        Refusal {
            reason: "client_cert_untrusted",
            ..PEER_A
        }
        .check(&gw)
        .await;
    }

    /// A version 1 CRL (no extensions: what `openssl ca -gencrl` makes without a
    /// crl_extensions section) is loaded, checked against our CAs and enforced.
    #[tokio::test]
    async fn a_version_1_crl_made_by_openssl_revokes_a_peer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let certs = certs_dir();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let pem = certs
            .join("peer-revoked.pem")
            .to_string_lossy()
            .into_owned();
        let serial = openssl(&["x509", "-in", &pem, "-noout", "-serial"]);
        let serial = serial.trim().trim_start_matches("serial=");
        std::fs::write(
            d.join("index.txt"),
            format!("R\t491231235959Z\t250601000000Z\t{serial}\tunknown\t/CN=peer-revoked\n"),
        )
        .expect("index");
        std::fs::write(
            d.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca = test\n[test]\ndatabase = {}\ndefault_md = sha256\ndefault_crl_days = 30\n",
                d.join("index.txt").display()
            ),
        )
        .expect("ca.cnf");
        openssl(&[
            "ca",
            "-config",
            "ca.cnf",
            "-gencrl",
            "-keyfile",
            &certs.join("intermediate-ca.key").to_string_lossy(),
            "-cert",
            &certs.join("intermediate-ca.pem").to_string_lossy(),
            "-out",
            "v1.crl.pem",
        ]);
        let text = openssl(&["crl", "-in", "v1.crl.pem", "-noout", "-text"]);
        assert!(text.contains("Version 1"), "{text}");
        // Checked against our CAs: under another root it is refused at load.
        let err = mssante_gateway::trust::pki::TrustStore::load(
            &[certs.join("foreign-root-ca.pem")],
            &[],
            &[d.join("v1.crl.pem")],
        )
        .expect_err("a v1 CRL signed by none of our CAs");
        assert!(
            err.to_string().contains("not signed by a configured CA"),
            "{err}"
        );
        let file = d.join("v1.crl.pem").to_string_lossy().into_owned();
        let gw = TestGateway::start_with(move |t| {
            t["tls"]
                .as_table_mut()
                .expect("[tls]")
                .insert("crls".into(), toml::Value::Array(vec![file.into()]));
        })
        .await;
        REVOKED.check(&gw).await;
        accepted(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
    }

    #[tokio::test]
    async fn a_crl_past_its_next_update_defers_peers_of_that_ca() {
        let now = time::OffsetDateTime::now_utc();
        let body = crl(
            &[],
            now - time::Duration::days(8),
            now - time::Duration::days(1),
        );
        let state = Arc::new(Mutex::new((200, body)));
        let port = serve(state, Arc::new(AtomicUsize::new(0))).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("aci-el-org.crl");
        let gw = TestGateway::start_with(crl_source(port, &file)).await;
        wait_for(&gw, "updated").await;
        Refusal {
            code: 451,
            enhanced: "4.7.1",
            reason: "crl_expired",
            ..PEER_A
        }
        .check(&gw)
        .await;
    }

    #[tokio::test]
    async fn a_crl_signed_by_another_ca_is_refused_and_nothing_changes() {
        let state = Arc::new(Mutex::new((200, b"not a CRL at all".to_vec())));
        let port = serve(state, Arc::new(AtomicUsize::new(0))).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("aci-el-org.crl");
        let gw = TestGateway::start_with(crl_source(port, &file)).await;
        wait_for(&gw, "parse").await;
        assert!(!file.exists());
        // Still no CRL of the intermediate: its peers stay deferred, not let through.
        Refusal {
            code: 451,
            enhanced: "4.7.1",
            reason: "crl_unavailable",
            ..PEER_A
        }
        .check(&gw)
        .await;
    }
}
