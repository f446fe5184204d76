//! The binary as an operator runs it: `check-config` and `serve` on good and bad files.
//!
//! A bad configuration must stop the gateway with exit status 2 and messages that name the
//! file and the key to fix.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::{base_config, certs_dir, Client, IO_TIMEOUT};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs the built binary with `args`, killing it if it does not finish in time.
async fn run(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(IO_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("mssante-gateway {args:?} did not finish"))
        .expect("run mssante-gateway")
}

/// A configuration file in a temporary directory: the base one altered by `change`.
struct ConfigFile {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ConfigFile {
    fn new(change: impl FnOnce(&mut toml::Table)) -> ConfigFile {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut table = base_config(&dir.path().join("spool"));
        change(&mut table);
        let path = dir.path().join("gateway.toml");
        let text = toml::to_string(&table).expect("configuration serialises");
        std::fs::write(&path, text).expect("write the configuration");
        ConfigFile { path, _dir: dir }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("UTF-8 temporary path")
    }
}

/// Sets `key` of `[section]`, or a top-level key when `section` is empty.
fn set(table: &mut toml::Table, section: &str, key: &str, value: impl Into<toml::Value>) {
    if section.is_empty() {
        table.insert(key.to_string(), value.into());
    } else {
        common::set(table, section, key, value);
    }
}

fn cert(name: &str) -> String {
    certs_dir().join(name).to_string_lossy().into_owned()
}

/// The lines of stderr naming a problem of `file`.
fn problems(out: &Output, file: &str) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{file}: ")) && !l.contains("problem(s)"))
        .map(str::to_string)
        .collect()
}

/// Runs `check-config` on `file`, expects exit 2 and one problem line per entry of
/// `expected`, each naming the file and containing every fragment given (the key first).
async fn assert_refused(file: &ConfigFile, expected: &[&[&str]]) -> Output {
    let out = run(&["check-config", "--config", file.path()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let lines = problems(&out, file.path());
    assert_eq!(lines.len(), expected.len(), "stderr: {stderr}");
    for fragments in expected {
        assert!(
            lines
                .iter()
                .any(|l| fragments.iter().all(|f| l.contains(f))),
            "no problem line with {fragments:?} in:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!("{} problem(s)", expected.len())),
        "{stderr}"
    );
    out
}

#[tokio::test]
async fn check_config_accepts_the_shipped_local_configuration() {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/local.toml");
    let out = run(&["check-config", "--config", local.to_str().expect("UTF-8")]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(stdout.contains("smtp.gateway.test.mssante.fr"), "{stdout}");
}

#[tokio::test]
async fn check_config_names_an_unknown_key() {
    let file = ConfigFile::new(|t| set(t, "inbound", "max_conections", 10));
    assert_refused(
        &file,
        &[&["inbound.max_conections", "unknown field `max_conections`"]],
    )
    .await;
}

#[tokio::test]
async fn check_config_names_a_missing_certificate_file() {
    let missing = cert("no-such-certificate.pem");
    let file = ConfigFile::new(|t| set(t, "tls", "certificate", missing.as_str()));
    assert_refused(
        &file,
        &[&["tls.certificate", "no-such-certificate.pem", "cannot read"]],
    )
    .await;
}

#[tokio::test]
async fn check_config_names_a_key_that_does_not_match_the_certificate() {
    let file = ConfigFile::new(|t| set(t, "tls", "key", cert("peer-a.key")));
    assert_refused(&file, &[&["tls.key", "peer-a.key", "does not belong"]]).await;
}

#[tokio::test]
async fn check_config_refuses_a_certificate_without_client_auth() {
    let file = ConfigFile::new(|t| {
        set(t, "tls", "certificate", cert("peer-server-only-chain.pem"));
        set(t, "tls", "key", cert("peer-server-only.key"));
    });
    assert_refused(&file, &[&["tls.certificate", "clientAuth"]]).await;
}

#[tokio::test]
async fn check_config_names_a_bad_listen_address() {
    let file = ConfigFile::new(|t| set(t, "inbound", "listen", "localhost:25"));
    assert_refused(&file, &[&["inbound.listen", "\"localhost:25\""]]).await;
}

#[tokio::test]
async fn check_config_names_an_unknown_espace() {
    let file = ConfigFile::new(|t| set(t, "", "espace", "staging"));
    assert_refused(&file, &[&["espace", "`staging`", "`test` or `production`"]]).await;
}

#[tokio::test]
async fn check_config_lists_every_problem_of_a_file() {
    let file = ConfigFile::new(|t| {
        set(t, "tls", "certificate", cert("no-such-certificate.pem"));
        set(t, "inbound", "listen", "localhost:25");
        set(t, "inbound", "command_timeout", "5 moments");
        set(t, "inbound", "max_recipients", 0);
        set(t, "tls", "min_version", "1.1");
    });
    assert_refused(
        &file,
        &[
            &["tls.certificate", "no-such-certificate.pem"],
            &["inbound.listen", "localhost:25"],
            &["inbound.command_timeout", "5 moments"],
            &["inbound.max_recipients", "greater than 0"],
            &["tls.min_version", "1.1"],
        ],
    )
    .await;
}

#[tokio::test]
async fn serve_refuses_a_bad_configuration_with_the_same_messages() {
    let file = ConfigFile::new(|t| {
        set(t, "tls", "key", cert("peer-a.key"));
        set(t, "inbound", "listen", "localhost:25");
    });
    let checked = assert_refused(
        &file,
        &[
            &["tls.key", "peer-a.key"],
            &["inbound.listen", "localhost:25"],
        ],
    )
    .await;
    let served = run(&["serve", "--config", file.path()]).await;
    assert_eq!(served.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&served.stderr),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[tokio::test]
async fn serve_runs_until_sigterm_then_closes_sessions_and_exits_0() {
    let file = ConfigFile::new(|_| {});
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
        .args(["serve", "--config", file.path()])
        // The start-up line read below is logged at info level.
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start mssante-gateway serve");
    let mut log = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let addr = tokio::time::timeout(IO_TIMEOUT, async {
        while let Some(line) = log.next_line().await.expect("read the log") {
            if !line.contains("mssante-gateway started") {
                continue;
            }
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("inbound="))
                .unwrap_or_else(|| panic!("no inbound address in {line:?}"));
            return addr.parse::<std::net::SocketAddr>().expect("an address");
        }
        panic!("serve ended without starting");
    })
    .await
    .expect("serve did not start in time");

    let mut c = Client::connect(addr).await;
    c.expect_code(220).await;
    let pid = child.id().expect("serve is running").to_string();
    let kill = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("run kill");
    assert!(kill.success());
    c.expect(421, "4.3.2").await;
    c.expect_eof().await;
    let status = tokio::time::timeout(IO_TIMEOUT, child.wait())
        .await
        .expect("serve stops after SIGTERM")
        .expect("wait for serve");
    assert_eq!(status.code(), Some(0));
}

/// `whitelist verify` reads no more than a download may bring, and names what is wrong
/// with a forged list.
#[tokio::test]
async fn whitelist_verify_bounds_the_file_and_names_a_forgery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ConfigFile::new(|t| {
        t["whitelist"]
            .as_table_mut()
            .expect("[whitelist]")
            .insert("max_size".into(), 4096.into());
    });
    let signed = std::fs::read_to_string(certs_dir().join("whitelist.xml")).expect("test list");
    assert!(
        signed.len() > 4096,
        "the test list must exceed the bound used here"
    );
    let path = dir.path().join("liste.xml");
    std::fs::write(&path, &signed).expect("write");
    let out = run(&[
        "whitelist",
        "verify",
        "--config",
        config.path.to_str().expect("utf-8"),
        path.to_str().expect("utf-8"),
    ])
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("larger than whitelist.max_size (4096 bytes)"),
        "{text}"
    );

    let forged = signed.replacen(
        "</SignatureValue>",
        "</SignatureValue><DigestValue>AAAA</DigestValue>",
        1,
    );
    std::fs::write(&path, forged).expect("write");
    let out = run(&[
        "whitelist",
        "verify",
        "--skip-chain",
        path.to_str().expect("utf-8"),
    ])
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("REFUSED") && text.contains("found DigestValue where KeyInfo is expected"),
        "{text}"
    );
}

/// The espace selects the IGC Santé hierarchy: the bundled TEST roots in a production
/// configuration are refused (one line per CA), and so is switching the liste blanche's
/// signature check off in production.
#[tokio::test]
async fn check_config_refuses_test_anchors_and_an_unsigned_list_in_production() {
    let file = ConfigFile::new(|t| {
        t.insert("espace".into(), "production".into());
        t["whitelist"]
            .as_table_mut()
            .expect("[whitelist]")
            .insert("verify_signature".into(), false.into());
    });
    let out = assert_refused(
        &file,
        &[
            &[
                "tls.anchors",
                "TEST AC RACINE IGC-SANTE ELEMENTAIRE",
                "TEST hierarchy",
            ],
            &[
                "tls.anchors",
                "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS",
                "TEST hierarchy",
            ],
            &[
                "whitelist.verify_signature",
                "refused in the production espace",
            ],
        ],
    )
    .await;
    println!("{}", String::from_utf8_lossy(&out.stderr));
}

/// A production root in a test configuration is refused too.
#[tokio::test]
async fn check_config_refuses_a_production_root_in_the_test_espace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "AC RACINE IGC-SANTE ELEMENTAIRE");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "IGC-SANTE");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root = params.self_signed(&key).expect("root");
    let anchors = dir.path().join("anchors.pem");
    let test_anchors =
        std::fs::read_to_string(certs_dir().join("anchors.pem")).expect("test anchors");
    std::fs::write(&anchors, format!("{test_anchors}{}", root.pem())).expect("write");
    let file = ConfigFile::new(|t| {
        t["tls"].as_table_mut().expect("[tls]").insert(
            "anchors".into(),
            toml::Value::Array(vec![anchors.to_string_lossy().into_owned().into()]),
        );
    });
    assert_refused(
        &file,
        &[&[
            "tls.anchors",
            "AC RACINE IGC-SANTE ELEMENTAIRE",
            "production IGC Santé hierarchy",
        ]],
    )
    .await;
}

/// `check-config` runs, offline, the checks `serve` would fail on later: each
/// misconfiguration below gets a line naming the file, the key and the fix (errors make it
/// exit 2, warnings alone do not). The transcripts are in docs/OPERATIONS.md.
#[tokio::test]
async fn check_config_finds_what_serve_would_fail_on() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let certs = certs_dir();
    let p = |name: &str| certs_dir().join(name).to_string_lossy().into_owned();
    let tls = |t: &mut toml::Table, key: &str, value: toml::Value| {
        t["tls"]
            .as_table_mut()
            .expect("[tls]")
            .insert(key.into(), value);
    };
    let whitelist = |t: &mut toml::Table, key: &str, value: toml::Value| {
        t["whitelist"]
            .as_table_mut()
            .expect("[whitelist]")
            .insert(key.into(), value);
    };
    let tampered = scratch.path().join("tampered.xml");
    std::fs::write(
        &tampered,
        std::fs::read_to_string(certs.join("whitelist.xml"))
            .expect("list")
            .replacen("OPERATEUR PEER A", "OPERATEUR PIRATE", 1),
    )
    .expect("write");
    let other = scratch.path().join("other-pki");
    mssante_gateway::tools::test_pki::generate(&other).expect("another PKI");
    let foreign_crl = other
        .join("intermediate-ca.crl.pem")
        .to_string_lossy()
        .into_owned();
    let no_dir = scratch.path().join("missing-dir/liste.xml");

    type Change<'a> = Box<dyn Fn(&mut toml::Table) + 'a>;
    let cases: Vec<(&str, Change, i32, &[&str])> = vec![
        (
            "the list's signer is not the configured one",
            Box::new(move |t| whitelist(t, "signer_o", "SOMEONE ELSE".into())),
            2,
            &[
                "whitelist.signer_o:",
                "does not verify",
                "signer_cn and whitelist.signer_o",
            ],
        ),
        (
            "the intermediate of the list's signer is missing",
            Box::new(move |t| tls(t, "intermediates", toml::Value::Array(vec![]))),
            2,
            &["tls.anchors:", "not trusted"],
        ),
        (
            "a foreign anchor",
            Box::new(move |t| {
                tls(
                    t,
                    "anchors",
                    toml::Value::Array(vec![p("foreign-root-ca.pem").into()]),
                )
            }),
            2,
            &[
                "tls.certificate:",
                "does not verify as a server",
                "tls.anchors:",
            ],
        ),
        (
            "a tampered list",
            Box::new(move |t| {
                whitelist(t, "cache", tampered.to_string_lossy().into_owned().into())
            }),
            2,
            &["whitelist.cache:", "digest mismatch"],
        ),
        (
            "our certificate does not chain to the anchors",
            Box::new(move |t| {
                tls(t, "certificate", p("peer-foreign-chain.pem").into());
                tls(t, "key", p("peer-foreign.key").into());
            }),
            2,
            &["tls.certificate:", "does not verify"],
        ),
        (
            "a CRL from another CA",
            Box::new(move |t| {
                tls(
                    t,
                    "crls",
                    toml::Value::Array(vec![foreign_crl.clone().into()]),
                )
            }),
            2,
            &["tls.crls:", "intermediate-ca.crl.pem"],
        ),
        (
            "a local domain absent from the list",
            Box::new(move |t| {
                t.insert(
                    "local_domains".into(),
                    toml::Value::Array(vec![
                        "gateway.test.mssante.fr".into(),
                        "absent.test.mssante.fr".into(),
                    ]),
                );
            }),
            0,
            &[
                "local_domains: warning:",
                "absent.test.mssante.fr is not on the liste blanche",
            ],
        ),
        (
            "the cache directory is missing",
            Box::new(move |t| {
                whitelist(t, "fetch", true.into());
                whitelist(t, "url", "https://localhost:1/liste.xml".into());
                whitelist(t, "cache", no_dir.to_string_lossy().into_owned().into());
            }),
            2,
            &["whitelist.cache:", "does not exist", "create the directory"],
        ),
    ];
    for (what, change, code, fragments) in cases {
        let file = ConfigFile::new(|t| change(t));
        let out = run(&["check-config", "--config", file.path()]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("== {what} (exit {:?})\n{stderr}", out.status.code());
        assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
        for f in fragments {
            assert!(stderr.contains(f), "{what}: no {f:?} in\n{stderr}");
        }
        assert!(
            stderr.lines().all(|l| l.starts_with(file.path())),
            "{what}: every line names the file:\n{stderr}"
        );
    }
}

/// With `whitelist.fetch = false` the cache file is the list: `serve` refuses to start on
/// one that does not verify (it used to start and answer 451 for ever), and `whitelist
/// fetch` will not overwrite it without `--force`.
#[tokio::test]
async fn a_fixed_list_that_does_not_verify_stops_serve_and_fetch_leaves_it_alone() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let tampered = scratch.path().join("tampered.xml");
    std::fs::write(
        &tampered,
        std::fs::read_to_string(certs_dir().join("whitelist.xml"))
            .expect("list")
            .replacen("OPERATEUR PEER A", "OPERATEUR PIRATE", 1),
    )
    .expect("write");
    let file = ConfigFile::new(|t| {
        t["whitelist"].as_table_mut().expect("[whitelist]").insert(
            "cache".into(),
            tampered.to_string_lossy().into_owned().into(),
        );
    });
    let out = run(&["serve", "--config", file.path()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "cannot start: {stderr}");
    assert!(
        stderr.contains("whitelist.fetch = false and the fixed liste blanche is unusable")
            && stderr.contains("digest mismatch"),
        "{stderr}"
    );

    let out = run(&["whitelist", "fetch", "--config", file.path()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pass --force"), "{stderr}");
}

/// An unknown key or a value of the wrong type no longer hides the file's other problems:
/// each is named, and the checks run on the rest.
#[tokio::test]
async fn check_config_names_type_errors_unknown_keys_and_the_rest_in_one_run() {
    let file = ConfigFile::new(|t| {
        let inbound = t["inbound"].as_table_mut().expect("[inbound]");
        inbound.insert("bogus".into(), 1.into());
        inbound.insert("max_connections".into(), "many".into());
        inbound.insert("listen".into(), "nowhere".into());
        t["whitelist"]
            .as_table_mut()
            .expect("[whitelist]")
            .insert("max_shrink".into(), 3.0.into());
    });
    assert_refused(
        &file,
        &[
            &["inbound.bogus", "unknown field"],
            &["inbound.max_connections", "invalid type"],
            &["inbound.listen", "is not an address"],
            &["whitelist.max_shrink", "not a fraction"],
        ],
    )
    .await;
}

/// `whitelist lookup` answers scripts by its exit code: 0 listed, 1 not listed, 2 a query
/// that is neither a domain nor a DN.
#[tokio::test]
async fn whitelist_lookup_exit_codes_say_listed_or_not() {
    let config = ConfigFile::new(|_| {});
    let path = config.path.to_str().expect("utf-8");
    let cases: &[(&str, i32, &str)] = &[
        ("peer-a.test.mssante.fr", 0, "DN:"),
        ("PEER-A.test.mssante.fr.", 0, "DN:"),
        ("absent.test.mssante.fr", 1, "not listed"),
        (
            "CN=smtp.peer-a.test.mssante.fr,OU=nobody,O=NOT LISTED,C=FR",
            1,
            "not listed",
        ),
        ("CN=\"unterminated", 2, "not a DN"),
    ];
    for (query, code, says) in cases {
        let out = run(&["whitelist", "lookup", "--config", path, query]).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(*code), "{query}: {text}");
        assert!(text.contains(says), "{query}: {text}");
    }
}
