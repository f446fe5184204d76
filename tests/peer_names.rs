//! What a peer's certificate names may do: its EHLO name must be its CN (a DNS SAN only when
//! the operator allows it), and a name carrying control characters, or a certificate
//! signed with SHA-1, gets a short ASCII reply and never a forged log line.

mod common;

use common::{certs_dir, identity_from_pem, Client, ReplyCheck, TestGateway, LOCAL_DOMAIN};
use mssante_gateway::tools::test_pki;

/// Connects, then EHLO `helo`, STARTTLS presenting the PEM identity, EHLO again.
async fn connect_as(gw: &TestGateway, helo: &str, (chain, key): (&str, &str)) -> Client {
    let mut c = gw.connect().await;
    c.starttls_as(helo, identity_from_pem(chain, key)).await;
    c
}

fn with_ehlo_names(mode: &'static str) -> impl FnOnce(&mut toml::Table) {
    move |t| {
        let mut p = toml::Table::new();
        p.insert("ehlo_names".into(), mode.into());
        t.insert("policy".into(), p.into());
    }
}

#[tokio::test]
async fn the_ehlo_name_must_be_the_cn_unless_sans_are_allowed() {
    let cn = "smtp.peer-a.test.mssante.fr";
    let alias = "alias.peer-a.test.mssante.fr";
    let (chain, key) =
        test_pki::issue_peer_a_variant(&certs_dir(), cn, &[cn, alias]).expect("issue");

    let gw = TestGateway::start().await;
    let mut c = connect_as(&gw, alias, (&chain, &key)).await;
    let before = gw.rejections("mail", "ehlo_cn_mismatch");
    c.send("MAIL FROM:<a@peer-a.test.mssante.fr>").await;
    c.expect(550, "5.7.1").await;
    assert_eq!(gw.rejections("mail", "ehlo_cn_mismatch"), before + 1);
    // The same certificate with its CN as EHLO name is served.
    let mut c = connect_as(&gw, cn, (&chain, &key)).await;
    c.send_message(
        "a@peer-a.test.mssante.fr",
        &[&format!("bob@{LOCAL_DOMAIN}")],
        b"Subject: cn\r\n\r\nok\r\n",
    )
    .await;

    let gw = TestGateway::start_with(with_ehlo_names("cn_or_san")).await;
    let mut c = connect_as(&gw, alias, (&chain, &key)).await;
    c.send("MAIL FROM:<a@peer-a.test.mssante.fr>").await;
    c.expect(250, "2.1.0").await;
}

/// Every byte of every reply line read so far is ASCII, and no line exceeds 512 bytes.
fn ascii_and_short(text: &str) {
    for line in text.lines() {
        assert!(line.is_ascii(), "{line:?}");
        assert!(line.len() + 2 <= 512, "{} bytes: {line:?}", line.len() + 2);
    }
}

#[tokio::test]
async fn a_sha1_certificate_gets_a_short_ascii_reply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs_dir();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {:?}", out);
    };
    run(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "sha1.key",
        "-subj",
        "/C=FR/ST=Bas-Rhin (67)/O=OPERATEUR PEER A/OU=398765432400001/CN=smtp.peer-a.test.mssante.fr",
        "-out",
        "sha1.csr",
    ]);
    std::fs::write(
        dir.path().join("ext"),
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:smtp.peer-a.test.mssante.fr\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-sha1",
        "-in",
        "sha1.csr",
        "-CA",
        &certs.join("intermediate-ca.pem").to_string_lossy(),
        "-CAkey",
        &certs.join("intermediate-ca.key").to_string_lossy(),
        "-set_serial",
        "4242",
        "-days",
        "30",
        "-extfile",
        "ext",
        "-out",
        "sha1.pem",
    ]);
    let leaf = std::fs::read_to_string(dir.path().join("sha1.pem")).expect("leaf");
    let chain = format!(
        "{leaf}{}",
        std::fs::read_to_string(certs.join("intermediate-ca.pem")).expect("intermediate")
    );
    let key = std::fs::read_to_string(dir.path().join("sha1.key")).expect("key");

    let gw = TestGateway::start().await;
    let mut c = connect_as(&gw, "smtp.peer-a.test.mssante.fr", (&chain, &key)).await;
    c.send("MAIL FROM:<a@peer-a.test.mssante.fr>").await;
    let reply = c.read_reply().await;
    reply.assert_is(550, "5.7.1");
    let text = format!("{reply:?}");
    assert!(text.contains("unsupported algorithm"), "{text}");
    for line in &reply.lines {
        ascii_and_short(line);
    }

    // The reply to a missing certificate names IGC Santé, in ASCII.
    let mut c = gw.connect().await;
    c.ehlo().await;
    c.starttls(None).await;
    c.ehlo().await;
    c.send("MAIL FROM:<a@peer-a.test.mssante.fr>").await;
    let reply = c.read_reply().await;
    assert_eq!(reply.code, 530);
    assert!(reply.lines.iter().all(|l| l.is_ascii()), "{reply:?}");
    assert!(
        reply.lines.iter().any(|l| l.contains("IGC Sante")),
        "{reply:?}"
    );
}
