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
    let c = gw.connect().await;
    established(c, peer, helo).await
}

async fn established(mut c: Client, peer: &str, helo: &str) -> Client {
    c.send(&format!("EHLO {helo}")).await;
    c.expect_code(250).await;
    c.starttls(Some(peer)).await;
    c.send(&format!("EHLO {helo}")).await;
    c.expect_code(250).await;
    c
}

/// A message from peer-a's domain to bob, which must be accepted.
async fn delivers(c: &mut Client) {
    c.send_message(
        "x@peer-a.test.mssante.fr",
        &[&rcpt()],
        b"Subject: ok\r\n\r\nok\r\n",
    )
    .await;
}

/// MAIL FROM `from` must be refused with `code enhanced` and counted under `reason`.
async fn refused_at_mail(
    gw: &TestGateway,
    c: &mut Client,
    from: &str,
    code: u16,
    enhanced: &str,
    reason: &str,
) {
    let before = gw.rejections("mail", reason);
    c.send(&format!("MAIL FROM:<{from}>")).await;
    c.expect(code, enhanced).await;
    assert_eq!(
        gw.rejections("mail", reason),
        before + 1,
        "reason {reason} not counted"
    );
}

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

    // Each refused case: (audit domain, certificate, EHLO name, reason), all 550 5.7.1.
    // cert-no-match-audit is listed with peer-b's DN and sent with peer-a's certificate;
    // cert-cn-diff-dn-audit has the listed DN's O, OU and ST with another CN.
    let refused = [
        (
            "cert-expire-audit",
            "peer-expired",
            "smtp.peer-expired.test.mssante.fr",
            "client_cert_expired",
        ),
        (
            "cert-revoque-audit",
            "peer-revoked",
            "smtp.peer-revoked.test.mssante.fr",
            "client_cert_revoked",
        ),
        (
            "cert-non-igc-audit",
            "peer-foreign",
            "smtp.peer-foreign.test.mssante.fr",
            "client_cert_untrusted",
        ),
        (
            "cert-no-match-audit",
            "peer-a",
            "smtp.peer-a.test.mssante.fr",
            "sender_dn_mismatch",
        ),
        (
            "cert-cn-diff-dn-audit",
            "peer-a-cn-diff",
            "other.peer-a.test.mssante.fr",
            "dn_not_listed",
        ),
    ];
    for (domain, cert, helo, reason) in refused {
        let mut c = peer(&gw, cert, helo).await;
        let from = format!("audit@{domain}.test.mssante.fr");
        refused_at_mail(&gw, &mut c, &from, 550, "5.7.1", reason).await;
    }

    // sans-tls-audit.
    let mut c = gw.connect().await;
    c.send("EHLO smtp.peer-a.test.mssante.fr").await;
    c.expect_code(250).await;
    refused_at_mail(
        &gw,
        &mut c,
        "audit@sans-tls-audit.test.mssante.fr",
        530,
        "5.7.0",
        "tls_required",
    )
    .await;

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
    let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
    refused_at_mail(
        &gw,
        &mut c,
        "x@peer-b.test.mssante.fr",
        550,
        "5.7.1",
        "sender_dn_mismatch",
    )
    .await;
    refused_at_mail(
        &gw,
        &mut c,
        "x@not-listed.mssante.fr",
        550,
        "5.7.1",
        "sender_domain_not_listed",
    )
    .await;
    // The right domain still works on the same connection.
    delivers(&mut c).await;
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
    let mut c = peer(&gw, "peer-a-cn-diff", "other.peer-a.test.mssante.fr").await;
    refused_at_mail(&gw, &mut c, "", 550, "5.7.1", "dn_not_listed").await;
}

#[tokio::test]
async fn ehlo_not_matching_the_cn_is_refused_in_enforce_mode() {
    let gw = TestGateway::start().await;
    let mut c = peer(&gw, "peer-a", "mail.elsewhere.example").await;
    refused_at_mail(
        &gw,
        &mut c,
        "x@peer-a.test.mssante.fr",
        550,
        "5.7.1",
        "ehlo_cn_mismatch",
    )
    .await;
    // Case and a trailing dot do not matter.
    let mut c = peer(&gw, "peer-a", "SMTP.Peer-A.test.mssante.fr.").await;
    delivers(&mut c).await;
}

#[tokio::test]
async fn ehlo_not_matching_the_cn_is_only_logged_in_log_mode() {
    let gw = TestGateway::start_with(|t| {
        let mut policy = toml::Table::new();
        policy.insert("ehlo_check".into(), "log".into());
        t.insert("policy".into(), policy.into());
    })
    .await;
    let mut c = peer(&gw, "peer-a", "mail.elsewhere.example").await;
    delivers(&mut c).await;
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
        let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
        delivers(&mut c).await;
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
    let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
    refused_at_mail(
        &gw,
        &mut c,
        "x@peer-a.test.mssante.fr",
        550,
        "5.7.1",
        "dn_not_listed",
    )
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
    let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
    refused_at_mail(
        &gw,
        &mut c,
        "x@peer-a.test.mssante.fr",
        451,
        "4.7.1",
        "whitelist_stale",
    )
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
        let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
        refused_at_mail(
            &gw,
            &mut c,
            "x@peer-a.test.mssante.fr",
            550,
            "5.7.1",
            "fcrdns_mismatch",
        )
        .await;
    }

    #[tokio::test]
    async fn log_mode_only_counts_the_mismatch() {
        let dns = DnsServer::start(&[]);
        let gw = TestGateway::start_with(checking("log", dns.addr)).await;
        let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
        delivers(&mut c).await;
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

    async fn wait_for(gw: &TestGateway, outcome: &str) {
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        while gw
            .metrics
            .crl_fetch_total
            .with_label_values(&[outcome])
            .get()
            == 0
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no CRL fetch with outcome {outcome}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

        let mut c = peer(&gw, "peer-b", "smtp.peer-b.test.mssante.fr").await;
        refused_at_mail(
            &gw,
            &mut c,
            "x@peer-b.test.mssante.fr",
            550,
            "5.7.1",
            "client_cert_revoked",
        )
        .await;
        // peer-a is not on this CRL.
        let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
        delivers(&mut c).await;
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
        let issuer = x509.subject().to_string();
        let present = |gw: &TestGateway| gw.metrics.crl_present.with_label_values(&[&issuer]).get();
        assert_eq!(present(&gw), 0);
        for (who, helo) in [
            ("peer-revoked", "smtp.peer-revoked.test.mssante.fr"),
            ("peer-a", "smtp.peer-a.test.mssante.fr"),
        ] {
            let mut c = peer(&gw, who, helo).await;
            refused_at_mail(
                &gw,
                &mut c,
                "x@peer-a.test.mssante.fr",
                451,
                "4.7.1",
                "crl_unavailable",
            )
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
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        while present(&gw) != 1 {
            assert!(tokio::time::Instant::now() < deadline, "CRL not installed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(common::http_get(addr, "/readyz").await.0.contains("200"));
        let mut c = peer(&gw, "peer-revoked", "smtp.peer-revoked.test.mssante.fr").await;
        refused_at_mail(
            &gw,
            &mut c,
            "x@peer-a.test.mssante.fr",
            550,
            "5.7.1",
            "client_cert_revoked",
        )
        .await;
        let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
        delivers(&mut c).await;
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
        let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
        delivers(&mut c).await;
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
        refused_at_mail(
            &gw,
            &mut c,
            "x@peer-a.test.mssante.fr",
            550,
            "5.7.1",
            "client_cert_untrusted",
        )
        .await;

        // The operator moves to the other hierarchy (a new CRL file for its CA).
        gw.reload_with(settings(other.clone(), dir.path().join("second.crl")));
        let mut c = as_other_peer(&gw, &other).await;
        c.send("MAIL FROM:<x@peer-a.test.mssante.fr>").await;
        c.expect(250, "2.1.0").await;
        let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
        refused_at_mail(
            &gw,
            &mut c,
            "x@peer-a.test.mssante.fr",
            550,
            "5.7.1",
            "client_cert_untrusted",
        )
        .await;

        // The distribution point now serves the new CA's CRL: the store is rebuilt.
        let updated = gw
            .metrics
            .crl_fetch_total
            .with_label_values(&["updated"])
            .get();
        let second = mssante_gateway::tools::test_pki::intermediate_crl(
            &other,
            &[],
            now - time::Duration::hours(1),
            now + time::Duration::days(7),
        )
        .expect("CRL of the second PKI");
        *state.lock().expect("state") = (200, second);
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        while gw
            .metrics
            .crl_fetch_total
            .with_label_values(&["updated"])
            .get()
            == updated
        {
            assert!(tokio::time::Instant::now() < deadline, "no CRL update");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        while !dir.path().join("second.crl").is_file() {
            assert!(tokio::time::Instant::now() < deadline, "CRL not written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The reloaded hierarchy still rules, the start-up one is still out.
        let mut c = as_other_peer(&gw, &other).await;
        c.send("MAIL FROM:<x@peer-a.test.mssante.fr>").await;
        c.expect(250, "2.1.0").await;
        let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
        refused_at_mail(
            &gw,
            &mut c,
            "x@peer-a.test.mssante.fr",
            550,
            "5.7.1",
            "client_cert_untrusted",
        )
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
        let mut c = peer(&gw, "peer-revoked", "smtp.peer-revoked.test.mssante.fr").await;
        refused_at_mail(
            &gw,
            &mut c,
            "x@peer-a.test.mssante.fr",
            550,
            "5.7.1",
            "client_cert_revoked",
        )
        .await;
        let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
        delivers(&mut c).await;
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
        let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
        refused_at_mail(
            &gw,
            &mut c,
            "x@peer-a.test.mssante.fr",
            451,
            "4.7.1",
            "crl_expired",
        )
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
        let mut c = peer(&gw, "peer-a", "smtp.peer-a.test.mssante.fr").await;
        refused_at_mail(
            &gw,
            &mut c,
            "x@peer-a.test.mssante.fr",
            451,
            "4.7.1",
            "crl_unavailable",
        )
        .await;
    }
}
