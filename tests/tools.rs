//! The operator tools as an operator runs them: `annexe1` and `doctor` on the bundled test
//! configuration, and `doctor` on installations with the problems it must name.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::MX;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn annexe1_prints_the_filled_form_for_two_added_domains() {
    let o = run(&[
        "annexe1",
        "--config",
        "config/local.toml",
        "--add",
        "gateway.test.mssante.fr",
        "labo.gateway.test.mssante.fr",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc = stdout(&o);
    for expected in [
        "# Déclaration de domaines MSSanté – Annexe 1",
        "[ ] PRODUCTION [x] TEST",
        "| Nom de l'opérateur (tel que déclaré sur votre contrat d'adhésion) | CH GATEWAY TEST |",
        "`CN=smtp.gateway.test.mssante.fr,OU=1750000010,O=CH GATEWAY TEST,ST=Paris (75),C=FR`",
        "| Boîte aux lettres de réponse automatique | reponse-automatique@gateway.test.mssante.fr |",
        &format!("| Nom de l'éditeur de connecteur | mssante-gateway {} |", env!("CARGO_PKG_VERSION")),
        "| Identifiant structure | 750000010 (FINESS) |",
        "- [x] Méthode 1 : la délégation",
        "Primaire : `ns1.gateway-test.example.fr`",
        "| 750000010 (FINESS) | gateway.test.mssante.fr | Messagerie MSSante du CH Gateway Test | X |  |  |",
        "| 750000028 (FINESS) | labo.gateway.test.mssante.fr | Laboratoire du CH Gateway Test | X |  |  |",
    ] {
        assert!(doc.contains(expected), "missing {expected:?} in:\n{doc}");
    }
    assert!(!doc.contains("clinique.gateway.test.mssante.fr"));
}

#[test]
fn annexe1_json_carries_the_same_fields() {
    let o = run(&[
        "annexe1",
        "--config",
        "config/local.toml",
        "--remove",
        "clinique.gateway.test.mssante.fr",
        "--switch",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(v["espace"], "test");
    assert_eq!(
        v["domains"][0]["domain"],
        "clinique.gateway.test.mssante.fr"
    );
    assert_eq!(v["domains"][0]["structure_id_kind"], "SIRET");
    assert_eq!(v["domains"][0]["action"], "remove");
    assert_eq!(v["domains"][0]["switch"], true);
    assert_eq!(v["operator"]["dns"]["method"], "delegation");
}

#[test]
fn annexe1_lists_every_broken_rule_and_exits_2() {
    let o = run(&[
        "annexe1",
        "--config",
        "config/local.toml",
        "--add",
        "gateway.test.mssante.fr",
        "ch-xyz.example.fr",
        "--remove",
        "gateway.test.mssante.fr",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).is_empty());
    let err = stderr(&o);
    assert!(err.contains("both added and removed"), "{err}");
    assert!(err.contains("not under mssante.fr"), "{err}");
    assert!(
        err.contains("no [[operator.domains]] entry for \"ch-xyz.example.fr\""),
        "{err}"
    );
    assert!(err.contains("3 problem(s)"), "{err}");
}

#[test]
fn annexe1_switch_alone_is_refused() {
    let o = run(&["annexe1", "--config", "config/local.toml", "--switch"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--switch (BASCULE)"), "{}", stderr(&o));
}

/// A DNS server on loopback UDP that knows only the MX records given (domain, target);
/// any other name is NXDOMAIN. It lives until the test process ends.
fn fake_dns(mx: &[(&str, &str)]) -> SocketAddr {
    let zone: Vec<(String, String)> = mx
        .iter()
        .map(|(d, t)| (d.to_string(), t.to_string()))
        .collect();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    let addr = socket.local_addr().expect("local address");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
            reply.metadata.recursion_desired = query.metadata.recursion_desired;
            reply.metadata.recursion_available = true;
            reply.metadata.authoritative = true;
            let mut known = false;
            for q in &query.queries {
                reply.add_query(q.clone());
                let asked = q
                    .name()
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                for (domain, target) in &zone {
                    if *domain != asked {
                        continue;
                    }
                    known = true;
                    if q.query_type() == RecordType::MX {
                        let Ok(exchange) = Name::from_ascii(format!("{target}.")) else {
                            continue;
                        };
                        reply.add_answer(Record::from_rdata(
                            q.name().clone(),
                            60,
                            RData::MX(MX::new(10, exchange)),
                        ));
                    }
                }
            }
            if !known {
                reply.metadata.response_code = ResponseCode::NXDomain;
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, from);
            }
        }
    });
    addr
}

fn doctor(config: &Path, dns: SocketAddr, extra: &[&str]) -> Output {
    let config = config.to_string_lossy().into_owned();
    let dns = dns.to_string();
    let mut args = vec!["doctor", "--config", &config, "--nameserver", &dns];
    args.extend_from_slice(extra);
    run(&args)
}

/// A DNS server that never answers gets advice about that server, not about a flag the
/// operator already gave; without the flag, the advice names it.
#[test]
fn the_doctor_advice_on_a_silent_dns_server_follows_the_flags_given() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let report = stdout(&doctor(Path::new("config/local.toml"), addr, &[]));
    let mx = line(&report, "domain.gateway.test.mssante.fr.mx");
    assert!(mx.contains(&format!("check that {addr} answers")), "{mx}");
    assert!(!mx.contains("pass --nameserver"), "{mx}");
    // The configuration's own server is the silent one, and no flag is given.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = std::fs::read_to_string("config/local.toml").expect("config");
    text.push_str(&format!(
        "\n[dns]\nname_servers = [\"{addr}\"]\ntimeout = \"1s\"\n"
    ));
    let text = text.replace("\"../", &format!("\"{}/", env!("CARGO_MANIFEST_DIR")));
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, text).expect("write");
    let o = run(&["doctor", "--config", &config.to_string_lossy()]);
    let report = stdout(&o);
    let mx = line(&report, "domain.gateway.test.mssante.fr.mx");
    assert!(mx.contains("pass --nameserver IP"), "{mx}{}", stderr(&o));
}

/// The line of check `name`, which must exist.
fn line<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no check {name} in:\n{report}"))
}

#[test]
fn doctor_on_the_bundled_configuration_does_not_fail() {
    let dns = fake_dns(&[("gateway.test.mssante.fr", "smtp.gateway.test.mssante.fr")]);
    let o = doctor(Path::new("config/local.toml"), dns, &[]);
    let report = stdout(&o);
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "{report}{}",
        stderr(&o)
    );
    for name in [
        "certificate.cn",
        "certificate.ou",
        "certificate.o",
        "certificate.st",
        "certificate.c",
        "certificate.eku",
        "certificate.key",
        "certificate.validity",
        "chain.server",
        "chain.client",
        "whitelist.load",
        "whitelist.fresh",
        "domain.gateway.test.mssante.fr.whitelist",
        "domain.gateway.test.mssante.fr.mx",
        "operator.auto_reply",
        "operator.annexe1",
        "listener.inbound",
        "listener.metrics",
    ] {
        assert!(!line(&report, name).starts_with("FAIL"), "{report}");
    }
    assert!(line(&report, "domain.gateway.test.mssante.fr.mx").starts_with("PASS"));

    let o = doctor(Path::new("config/local.toml"), dns, &["--no-dns", "--json"]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON report");
    let mx = v["checks"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["name"] == "domain.gateway.test.mssante.fr.mx")
        })
        .expect("mx check");
    assert_eq!(mx["status"], "warn");
    assert!(mx["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("not checked")));
}

/// A configuration of the test espace around the given certificate and key.
fn config_with(dir: &Path, cert: &Path, key: &Path) -> PathBuf {
    let certs = root().join("certs-test");
    let text = format!(
        r#"espace = "test"
local_domains = ["gateway.test.mssante.fr"]

[tls]
certificate = "{cert}"
key = "{key}"
anchors = ["{certs}/anchors.pem"]
intermediates = ["{certs}/intermediate-ca.pem"]

[inbound]
listen = "127.0.0.1:1"

[spool]
dir = "{dir}/spool"

[whitelist]
cache = "{certs}/whitelist.xml"
fetch = false
signer_cn = "alb.test.mssante.fr"
signer_o = "TEST SIGNATAIRE LISTE BLANCHE"
"#,
        cert = cert.display(),
        key = key.display(),
        certs = certs.display(),
        dir = dir.display(),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("write the configuration");
    path
}

#[test]
fn doctor_names_a_malformed_dn_and_an_mx_that_is_not_the_cn() {
    use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let dir = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
    // A CN in the operator's own domain, which the CN rule accepts.
    let cn = "smtp.hopital-test.example.fr";
    let mut params = CertificateParams::new(vec![cn.to_string()]).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "FR");
    dn.push(DnType::StateOrProvinceName, "Paris (75)");
    dn.push(DnType::OrganizationName, "Hôpital privé du Test");
    dn.push(DnType::OrganizationalUnitName, "750000010");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key).expect("certificate");
    let cert_path = dir.path().join("bad-dn.pem");
    let key_path = dir.path().join("bad-dn.key");
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    let config = config_with(dir.path(), &cert_path, &key_path);

    let dns = fake_dns(&[("gateway.test.mssante.fr", "mx.elsewhere.example.fr")]);
    let o = doctor(&config, dns, &[]);
    let report = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{report}{}", stderr(&o));
    let o_line = line(&report, "certificate.o");
    assert!(o_line.starts_with("FAIL"), "{report}");
    assert!(o_line.contains("\"HOPITAL PRIVE DU TEST\""), "{report}");
    let ou_line = line(&report, "certificate.ou");
    assert!(ou_line.starts_with("FAIL"), "{report}");
    assert!(
        ou_line.contains("starts with neither 1 (FINESS) nor 3 (SIRET)"),
        "{report}"
    );
    assert!(
        line(&report, "certificate.cn").starts_with("PASS"),
        "{report}"
    );
    assert!(
        line(&report, "chain.server").starts_with("FAIL"),
        "{report}"
    );
    let mx = line(&report, "domain.gateway.test.mssante.fr.mx");
    assert!(mx.starts_with("FAIL"), "{report}");
    assert!(
        mx.contains("mx.elsewhere.example.fr, not at our CN smtp.hopital-test.example.fr"),
        "{report}"
    );
    // The whitelist lists the domain with the real gateway DN, not this one.
    assert!(line(&report, "domain.gateway.test.mssante.fr.whitelist").starts_with("FAIL"));
}

#[test]
fn doctor_fails_a_cn_under_mssante_fr_without_the_delegation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = root().join("certs-test");
    // The bundled gateway certificate (CN smtp.gateway.test.mssante.fr), without the
    // [operator] section that declares gateway.test.mssante.fr delegated to us.
    let config = config_with(
        dir.path(),
        &certs.join("gateway-chain.pem"),
        &certs.join("gateway.key"),
    );
    let dns = fake_dns(&[("gateway.test.mssante.fr", "smtp.gateway.test.mssante.fr")]);
    let o = doctor(&config, dns, &["--no-dns"]);
    let report = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{report}{}", stderr(&o));
    let cn = line(&report, "certificate.cn");
    assert!(cn.starts_with("FAIL"), "{report}");
    assert!(cn.contains("is in ANS's zone mssante.fr"), "{report}");
    assert!(cn.contains("mssante-gateway csr"), "{report}");
    assert!(cn.contains("method = \"delegation\""), "{report}");
    // The rest of the subject is the form's.
    for name in ["certificate.ou", "certificate.o", "certificate.st"] {
        assert!(line(&report, name).starts_with("PASS"), "{report}");
    }

    // With the delegation declared (the bundled configuration), the same CN passes.
    let o = doctor(Path::new("config/local.toml"), dns, &["--no-dns"]);
    let report = stdout(&o);
    let cn = line(&report, "certificate.cn");
    assert!(cn.starts_with("PASS"), "{report}");
    assert!(cn.contains("delegated"), "{report}");
}

#[test]
fn doctor_names_an_expired_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = root().join("certs-test");
    let config = config_with(
        dir.path(),
        &certs.join("peer-expired-chain.pem"),
        &certs.join("peer-expired.key"),
    );
    let dns = fake_dns(&[(
        "gateway.test.mssante.fr",
        "smtp.peer-expired.test.mssante.fr",
    )]);
    let o = doctor(&config, dns, &[]);
    let report = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{report}{}", stderr(&o));
    let validity = line(&report, "certificate.validity");
    assert!(validity.starts_with("FAIL"), "{report}");
    assert!(validity.contains("expired on 2021-01-01"), "{report}");
    let chain = line(&report, "chain.client");
    assert!(
        chain.starts_with("FAIL") && chain.contains("expired"),
        "{report}"
    );
    assert!(
        line(&report, "domain.gateway.test.mssante.fr.mx").starts_with("PASS"),
        "{report}"
    );
}
