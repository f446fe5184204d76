//! The liste blanche as the gateway keeps it: fetched over HTTPS from a server of the test
//! PKI, verified, cached and used; then every way a refresh can go wrong leaves the
//! previous list in place, says why in a metric, and a restart with the server down
//! serves from the cache.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{certs_dir, Client, TestGateway, IO_TIMEOUT, LOCAL_DOMAIN};
use mssante_gateway::tools::{sample_whitelist, test_pki};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the list server answers.
#[derive(Clone)]
enum Answer {
    /// 200 with this body and an ETag; 304 when the request carries that ETag.
    List(Vec<u8>, &'static str),
    /// This status, empty body.
    Status(u16),
}

struct ListServer {
    answer: Arc<Mutex<Answer>>,
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl ListServer {
    async fn start(answer: Answer) -> ListServer {
        Self::start_with(answer, false).await
    }

    /// `client_auth`: the server requires a client certificate of the test PKI.
    async fn start_with(answer: Answer, client_auth: bool) -> ListServer {
        let (chain, key) = test_pki::issue_server_certificate(&certs_dir(), "localhost")
            .expect("server certificate");
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            for c in
                rustls_pki_types::CertificateDer::pem_file_iter(certs_dir().join("anchors.pem"))
                    .expect("anchors")
            {
                roots.add(c.expect("anchor")).expect("add anchor");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder.with_single_cert(certs, key).expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let answer = Arc::new(Mutex::new(answer));
        let shared = Arc::clone(&answer);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&req).to_ascii_lowercase();
                    let answer = shared.lock().expect("answer").clone();
                    let response = match answer {
                        Answer::List(_, etag) if head.contains(&format!("if-none-match: \"{etag}\"")) => {
                            format!("HTTP/1.1 304 Not Modified\r\netag: \"{etag}\"\r\nconnection: close\r\n\r\n").into_bytes()
                        }
                        Answer::List(body, etag) => {
                            let mut r = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\netag: \"{etag}\"\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            r.extend_from_slice(&body);
                            r
                        }
                        Answer::Status(code) => format!(
                            "HTTP/1.1 {code} Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .into_bytes(),
                    };
                    let _ = tls.write_all(&response).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        ListServer { answer, port, task }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().expect("answer") = answer;
    }

    fn url(&self) -> String {
        format!(
            "https://localhost:{}/listeblanchemssanteigcsante.xml",
            self.port
        )
    }
}

/// A signed list of the sample's first `n` entries, generated at `at`.
fn signed(n: usize, at: time::OffsetDateTime) -> Vec<u8> {
    let entries = sample_whitelist::sample_entries(&certs_dir()).expect("entries");
    let xml = sample_whitelist::render(&entries[..n], at);
    sample_whitelist::sign_with_test_signer(&certs_dir(), &xml)
        .expect("sign")
        .into_bytes()
}

fn fetching(url: String, cache: &Path) -> impl FnOnce(&mut toml::Table) + '_ {
    move |t| {
        let w = t["whitelist"].as_table_mut().expect("[whitelist]");
        w.insert("url".into(), url.into());
        w.insert("cache".into(), cache.to_string_lossy().into_owned().into());
        w.insert("fetch".into(), true.into());
        w.insert("refresh_interval".into(), "1s".into());
        w.insert("timeout".into(), "5s".into());
        w.insert("max_shrink".into(), 0.2.into());
    }
}

fn fetches(gw: &TestGateway, outcome: &str) -> u64 {
    gw.metrics.whitelist_fetch_total.get(&[outcome])
}

/// Waits until a refresh with `outcome` happens after the current count.
async fn next_refresh(gw: &TestGateway, outcome: &str) {
    let target = fetches(gw, outcome) + 1;
    let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
    while fetches(gw, outcome) < target {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refresh with outcome {outcome}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// peer-a can deliver: the list in use still lists it.
async fn peer_a_delivers(gw: &TestGateway) {
    let mut c = gw.connect().await;
    c.ehlo().await;
    c.starttls(Some("peer-a")).await;
    c.ehlo().await;
    c.send_message(
        "alice@peer-a.test.mssante.fr",
        &[&format!("bob@{LOCAL_DOMAIN}")],
        b"Subject: ok\r\n\r\nok\r\n",
    )
    .await;
    c.quit().await;
}

/// peer-b is refused when the list in use does not list it.
async fn peer_b_refused(gw: &TestGateway) {
    let mut c: Client = gw.connect().await;
    c.send("EHLO smtp.peer-b.test.mssante.fr").await;
    c.expect_code(250).await;
    c.starttls(Some("peer-b")).await;
    c.send("EHLO smtp.peer-b.test.mssante.fr").await;
    c.expect_code(250).await;
    c.send("MAIL FROM:<x@peer-b.test.mssante.fr>").await;
    c.expect(550, "5.7.1").await;
}

#[tokio::test]
async fn refresh_failures_keep_the_previous_list_and_the_cache_survives_a_restart() {
    // Its log lines (downloads, refusals) are checked against docs/log-schema.json.
    let (log, _logging) = common::json_log::Captured::install();
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("time");
    let full = signed(10, now - time::Duration::hours(2));
    let server = ListServer::start(Answer::List(full.clone(), "v1")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache: PathBuf = dir.path().join("liste.xml");

    // Fetched, verified, cached and used.
    let mut gw = TestGateway::start_with(fetching(server.url(), &cache)).await;
    assert_eq!(fetches(&gw, "updated"), 1, "first download at start-up");
    assert_eq!(std::fs::read(&cache).expect("cache written"), full);
    assert_eq!(gw.metrics.whitelist_entries.get(), 10);
    peer_a_delivers(&gw).await;

    // 304: unchanged.
    next_refresh(&gw, "unchanged").await;

    // 500.
    server.set(Answer::Status(500));
    next_refresh(&gw, "http_status").await;

    // A truncated file.
    server.set(Answer::List(full[..full.len() / 2].to_vec(), "v2"));
    next_refresh(&gw, "signature").await;

    // A badly signed file: a newer list with one DN edited after signing.
    let newer = String::from_utf8(signed(10, now - time::Duration::hours(1))).expect("utf-8");
    let tampered = newer
        .replacen("OPERATEUR PEER A", "OPERATEUR PIRATE", 1)
        .into_bytes();
    server.set(Answer::List(tampered, "v3"));
    next_refresh(&gw, "signature").await;

    // A list half the size (newer, validly signed: truncated upstream).
    server.set(Answer::List(
        signed(5, now - time::Duration::minutes(30)),
        "v4",
    ));
    next_refresh(&gw, "shrunk").await;

    // An older list (a replay).
    server.set(Answer::List(
        signed(10, now - time::Duration::days(1)),
        "v5",
    ));
    next_refresh(&gw, "older").await;

    // The server goes away.
    let url = server.url();
    server.task.abort();
    let _ = server.task.await;
    next_refresh(&gw, "network").await;

    // Through all of it the first list stayed in use, on disk and in memory.
    assert_eq!(gw.metrics.whitelist_entries.get(), 10);
    assert_eq!(std::fs::read(&cache).expect("cache"), full);
    assert_eq!(fetches(&gw, "updated"), 1);
    peer_a_delivers(&gw).await;
    gw.shutdown().await;

    // A restart with the server down serves from the cache.
    let gw = TestGateway::start_with(fetching(url, &cache)).await;
    assert_eq!(
        gw.metrics.whitelist_entries.get(),
        10,
        "loaded from the cache"
    );
    peer_a_delivers(&gw).await;
    next_refresh(&gw, "network").await;
    assert_eq!(gw.metrics.whitelist_entries.get(), 10);
    peer_a_delivers(&gw).await;
    let seen = common::json_log::check(&log.lines());
    for kind in common::json_log::ELSEWHERE {
        assert!(seen.contains(*kind), "no line of the kind {kind}: {seen:?}");
    }
}

#[tokio::test]
async fn a_valid_newer_list_replaces_the_old_one_without_a_restart() {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("time");
    let server = ListServer::start(Answer::List(
        signed(10, now - time::Duration::hours(2)),
        "v1",
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("liste.xml");
    let gw = TestGateway::start_with(fetching(server.url(), &cache)).await;
    // peer-b is the third entry: a newer list of the first two drops it (the shrink
    // limit is lifted for this test by listing 8 of 10 entries: 20% lost, allowed).
    let entries = sample_whitelist::sample_entries(&certs_dir()).expect("entries");
    let without_b: Vec<_> = entries
        .iter()
        .filter(|e| {
            e.domain != "peer-b.test.mssante.fr"
                && e.domain != "cert-no-match-audit.test.mssante.fr"
        })
        .cloned()
        .collect();
    let xml = sample_whitelist::render(&without_b, now - time::Duration::hours(1));
    let body = sample_whitelist::sign_with_test_signer(&certs_dir(), &xml)
        .expect("sign")
        .into_bytes();
    server.set(Answer::List(body.clone(), "v2"));
    next_refresh(&gw, "updated").await;
    assert_eq!(gw.metrics.whitelist_entries.get(), 8);
    assert_eq!(std::fs::read(&cache).expect("cache"), body);
    peer_b_refused(&gw).await;
    peer_a_delivers(&gw).await;
}

#[tokio::test]
async fn presents_our_certificate_when_the_espace_server_asks_for_one() {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("time");
    let server = ListServer::start_with(Answer::List(signed(10, now), "v1"), true).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // Without a client certificate the server refuses the handshake.
    let cache = dir.path().join("a.xml");
    let gw = TestGateway::start_with(fetching(server.url(), &cache)).await;
    assert_eq!(fetches(&gw, "network"), 1);
    assert_eq!(fetches(&gw, "updated"), 0);

    // With whitelist.client_certificate = true our identity is presented.
    let cache = dir.path().join("b.xml");
    let gw = TestGateway::start_with(|t| {
        fetching(server.url(), &cache)(t);
        t["whitelist"]
            .as_table_mut()
            .expect("[whitelist]")
            .insert("client_certificate".into(), true.into());
    })
    .await;
    assert_eq!(fetches(&gw, "updated"), 1);
    assert_eq!(gw.metrics.whitelist_entries.get(), 10);
}

/// A list forged from a signed one (an entry added, a second `DigestValue` planted after
/// the `SignatureValue`, the attack that once got through) is refused by a refresh, which
/// keeps the list in use, and is not trusted from the cache at the next start.
#[tokio::test]
async fn a_forged_list_is_neither_installed_nor_trusted_from_the_cache() {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("time");
    let entries = sample_whitelist::sample_entries(&certs_dir()).expect("entries");
    let without_b: Vec<_> = entries
        .iter()
        .filter(|e| e.domain != "peer-b.test.mssante.fr")
        .cloned()
        .collect();
    let peer_b = entries
        .iter()
        .find(|e| e.domain == "peer-b.test.mssante.fr")
        .expect("peer-b in the sample");
    let generated = now - time::Duration::hours(2);
    let xml = sample_whitelist::render(&without_b, generated);
    let genuine = sample_whitelist::sign_with_test_signer(&certs_dir(), &xml).expect("sign");
    let forged = common::forge::with_planted_digest(
        &genuine,
        |xml| {
            let with_b = sample_whitelist::render(
                std::slice::from_ref(peer_b),
                now - time::Duration::hours(1),
            );
            let start = with_b.find("<Domaine>").expect("entry");
            let end = with_b.rfind("</Domaine>").expect("entry end") + "</Domaine>".len();
            xml.replacen(
                "<ListeDomaines>",
                &format!("<ListeDomaines>{}", &with_b[start..end]),
                1,
            )
        },
        common::forge::after_signature_value,
    );
    assert!(forged.contains("peer-b.test.mssante.fr"));

    let server = ListServer::start(Answer::List(genuine.clone().into_bytes(), "v1")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("liste.xml");
    let mut gw = TestGateway::start_with(fetching(server.url(), &cache)).await;
    assert_eq!(gw.metrics.whitelist_entries.get(), 9);
    peer_b_refused(&gw).await;

    server.set(Answer::List(forged.clone().into_bytes(), "v2"));
    next_refresh(&gw, "signature").await;
    assert_eq!(
        gw.metrics.whitelist_entries.get(),
        9,
        "the forged list is not used"
    );
    assert_eq!(std::fs::read(&cache).expect("cache"), genuine.as_bytes());
    peer_b_refused(&gw).await;
    peer_a_delivers(&gw).await;
    gw.shutdown().await;

    // The forged file in the cache, the list server gone: nothing is trusted.
    std::fs::write(&cache, &forged).expect("plant the forged cache");
    let url = server.url();
    server.task.abort();
    let _ = server.task.await;
    let gw = TestGateway::start_with(fetching(url, &cache)).await;
    assert_eq!(
        gw.metrics.whitelist_entries.get(),
        0,
        "the forged cache is not loaded"
    );
    let mut c: Client = gw.connect().await;
    c.send("EHLO smtp.peer-b.test.mssante.fr").await;
    c.expect_code(250).await;
    c.starttls(Some("peer-b")).await;
    c.send("EHLO smtp.peer-b.test.mssante.fr").await;
    c.expect_code(250).await;
    c.send("MAIL FROM:<x@peer-b.test.mssante.fr>").await;
    let reply = c.read_reply().await;
    assert_eq!(
        reply.code / 100,
        4,
        "no list: a temporary refusal, got {reply:?}"
    );
}

/// A verified download whose cache write fails is used all the same (throwing it away left
/// the gateway without a list for good), and the failure is counted and logged.
#[tokio::test]
async fn a_verified_list_that_cannot_be_cached_is_still_used() {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("time");
    let server = ListServer::start(Answer::List(signed(10, now), "v1")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("no-such-directory/liste.xml");
    let gw = TestGateway::start_with(fetching(server.url(), &cache)).await;
    assert_eq!(gw.metrics.whitelist_entries.get(), 10);
    assert_eq!(fetches(&gw, "updated"), 1);
    assert_eq!(fetches(&gw, "cache_write"), 1);
    assert!(!cache.exists());
    peer_a_delivers(&gw).await;
}
