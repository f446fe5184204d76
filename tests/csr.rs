//! `csr` as an operator runs it, with OpenSSL as the independent judge of what it writes:
//! the request verifies, its subject is in IGC Santé's order with the configured values,
//! the key is private, sound and the request's. And what it refuses, naming the key.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A configuration of `espace` (the test PKI's files, which `csr` does not read) with the
/// given host name and legal representative's structure.
fn config(dir: &Path, espace: &str, hostname: &str, structure: &[(&str, &str)]) -> PathBuf {
    let mut t = common::base_config(&dir.join("spool"));
    t.insert("espace".into(), espace.into());
    t.insert("hostname".into(), hostname.into());
    let local: toml::Table = toml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/local.toml"))
            .expect("config/local.toml"),
    )
    .expect("config/local.toml is TOML");
    let mut operator = local["operator"].clone();
    let lr = operator["legal_representative"]
        .as_table_mut()
        .expect("[operator.legal_representative]");
    lr.remove("department");
    for (key, value) in structure {
        lr.insert(key.to_string(), (*value).into());
    }
    t.insert("operator".into(), operator);
    common::write_config(dir, &t)
}

/// CHU de Rouen's FINESS, as its certificate's OU in the liste blanche says.
const CHU: &[(&str, &str)] = &[
    (
        "structure_name",
        "Centre hospitalier universitaire de Rouen",
    ),
    ("structure_id", "760780239"),
    ("department", "Seine-Maritime (76)"),
];

/// `csr` run in `cwd` (where the default files go).
fn csr(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
        .arg("csr")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the binary runs")
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// The key is a sound PKCS#8 RSA key of `bits`, private, and the request carries its
/// public key; the request verifies and says `subject` (OpenSSL's order and spelling).
fn openssl_accepts(key: &Path, request: &Path, bits: u32, subject: &str, dns: &str) {
    let key = key.to_str().expect("UTF-8 path");
    let request = request.to_str().expect("UTF-8 path");
    let o = openssl(&["req", "-in", request, "-verify", "-noout", "-text"]);
    let shown = text(&o);
    assert!(o.status.success(), "{shown}");
    assert!(shown.contains("verify OK"), "{shown}");
    assert!(
        shown.contains(&format!("Subject: {subject}\n")),
        "expected Subject: {subject} in:\n{shown}"
    );
    assert!(
        shown.contains(&format!("Public-Key: ({bits} bit)")),
        "{shown}"
    );
    assert!(
        shown.contains("Signature Algorithm: sha256WithRSAEncryption"),
        "{shown}"
    );
    assert!(shown.contains("X509v3 Subject Alternative Name"), "{shown}");
    let sans: Vec<&str> = shown
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("DNS:"))
        .collect();
    assert_eq!(sans, [format!("DNS:{dns}")], "{shown}");

    // C as a PrintableString, the rest UTF8String, as IGC Santé's certificates have them.
    let o = openssl(&[
        "req",
        "-in",
        request,
        "-noout",
        "-subject",
        "-nameopt",
        "RFC2253,show_type",
    ]);
    assert!(stdout(&o).contains("C=PRINTABLESTRING:FR"), "{}", text(&o));
    assert!(stdout(&o).contains("CN=UTF8STRING:"), "{}", text(&o));

    let pem = std::fs::read_to_string(key).expect("read the key");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "PKCS#8");
    let o = openssl(&["rsa", "-in", key, "-check", "-noout"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("RSA key ok"), "{}", text(&o));

    let from_request = openssl(&["req", "-in", request, "-noout", "-pubkey"]);
    let from_key = openssl(&["pkey", "-in", key, "-pubout"]);
    assert!(from_request.status.success() && from_key.status.success());
    assert!(stdout(&from_key).starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(
        stdout(&from_request),
        stdout(&from_key),
        "the request is not for this key"
    );
}

#[test]
fn the_request_of_a_finess_structure_is_accepted_by_openssl_in_the_forms_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "test", "smtp.chu-exemple.fr", CHU);
    let o = csr(dir.path(), &["--config", cfg.to_str().expect("UTF-8")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = stdout(&o);
    assert!(
        out.contains("Attach this request to form F414 (test espace)"),
        "{out}"
    );
    assert!(
        out.contains("CN=smtp.chu-exemple.fr,OU=1760780239,O=CENTRE HOSPITALIER UNIVERSITAIRE DE ROUEN,ST=Seine-Maritime (76),C=FR"),
        "{out}"
    );
    assert!(
        out.contains("SAN          DNS:smtp.chu-exemple.fr"),
        "{out}"
    );

    // The defaults: <hostname>.key and <hostname>.csr in the current directory.
    let key = dir.path().join("smtp.chu-exemple.fr.key");
    let request = dir.path().join("smtp.chu-exemple.fr.csr");
    #[cfg(unix)]
    assert_eq!(mode(&key), 0o600, "the private key must be private");
    openssl_accepts(
        &key,
        &request,
        2048,
        "C = FR, ST = Seine-Maritime (76), O = CENTRE HOSPITALIER UNIVERSITAIRE DE ROUEN, OU = 1760780239, CN = smtp.chu-exemple.fr",
        "smtp.chu-exemple.fr",
    );
}

#[test]
fn a_siret_structure_in_production_gets_ou_3_a_3072_bit_key_and_form_f413() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Capgemini Technology Services' DN in the production liste blanche, with another CN:
    // OU=347976684200724, O=CAPGEMINI TECHNOLOGY SERVICES, ST=Hauts-de-Seine (92).
    let cfg = config(
        dir.path(),
        "production",
        "SMTP.Operateur-Exemple.FR.",
        &[
            ("structure_name", "Capgemini Technology Services"),
            ("structure_id", "47976684200724"),
            ("department", "Hauts-de-Seine (92)"),
        ],
    );
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("mkdir");
    let key = keys.join("mta.key");
    let request = dir.path().join("mta.csr");
    let o = csr(
        dir.path(),
        &[
            "--config",
            cfg.to_str().expect("UTF-8"),
            "--key-out",
            key.to_str().expect("UTF-8"),
            "--out",
            request.to_str().expect("UTF-8"),
            "--key-size",
            "3072",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        stdout(&o).contains("Attach this request to form F413 (production)"),
        "{}",
        stdout(&o)
    );
    #[cfg(unix)]
    assert_eq!(mode(&key), 0o600);
    // The host name is written in lower case, without its trailing dot.
    openssl_accepts(
        &key,
        &request,
        3072,
        "C = FR, ST = Hauts-de-Seine (92), O = CAPGEMINI TECHNOLOGY SERVICES, OU = 347976684200724, CN = smtp.operateur-exemple.fr",
        "smtp.operateur-exemple.fr",
    );
    // No other key size is offered.
    let o = csr(
        dir.path(),
        &[
            "--config",
            cfg.to_str().expect("UTF-8"),
            "--key-size",
            "1024",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn an_accented_departement_is_kept_in_utf8() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        "test",
        "smtp.ch-exemple.fr",
        &[
            ("structure_name", "Hôpital de l'Œuvre Saint-Joseph"),
            ("structure_id", "760780239"),
            ("department", "Rhône (69)"),
        ],
    );
    let o = csr(dir.path(), &["--config", cfg.to_str().expect("UTF-8")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let request = dir.path().join("smtp.ch-exemple.fr.csr");
    let o = openssl(&[
        "req",
        "-in",
        request.to_str().expect("UTF-8"),
        "-noout",
        "-subject",
        "-nameopt",
        "utf8,sep_comma_plus_space,space_eq",
    ]);
    assert_eq!(
        stdout(&o).trim(),
        "subject=C = FR, ST = Rhône (69), O = HOPITAL DE L'OEUVRE SAINT-JOSEPH, OU = 1760780239, CN = smtp.ch-exemple.fr"
    );
}

/// `csr` refuses `structure` or `hostname` with exit 2, names `key` and says `why`, and
/// writes nothing.
fn refused(hostname: &str, structure: &[(&str, &str)], key: &str, why: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "test", hostname, structure);
    let o = csr(dir.path(), &["--config", cfg.to_str().expect("UTF-8")]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stdout(&o).is_empty(), "{}", text(&o));
    assert!(
        err.contains(&format!("gateway.toml: {key}: ")),
        "expected the key {key} in:\n{err}"
    );
    assert!(err.contains(why), "expected {why:?} in:\n{err}");
    assert!(err.contains("no key or request was written"), "{err}");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["gateway.toml"], "nothing but the configuration");
}

/// [`CHU`] with `key` set to `value`.
fn with(key: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
    CHU.iter()
        .map(|&(k, v)| if k == key { (k, value) } else { (k, v) })
        .collect()
}

#[test]
fn a_finess_with_a_wrong_check_digit_is_refused() {
    refused(
        "smtp.chu-exemple.fr",
        &with("structure_id", "760780238"),
        "operator.legal_representative.structure_id",
        "wrong check digit",
    );
}

#[test]
fn a_siret_with_a_wrong_check_digit_is_refused() {
    refused(
        "smtp.chu-exemple.fr",
        &with("structure_id", "47976684200725"),
        "operator.legal_representative.structure_id",
        "SIRET \"47976684200725\" has a wrong check digit",
    );
}

#[test]
fn a_host_name_under_mssante_fr_is_refused() {
    refused(
        "smtp.chu-exemple.MSSANTE.fr.",
        CHU,
        "hostname",
        "is in ANS's zone mssante.fr",
    );
    refused("mssante.fr", CHU, "hostname", "is in ANS's zone mssante.fr");
}

#[test]
fn an_ip_address_as_host_name_is_refused() {
    refused("192.0.2.25", CHU, "hostname", "is an IP address");
}

#[test]
fn a_missing_departement_is_named() {
    let without: Vec<(&str, &str)> = CHU
        .iter()
        .copied()
        .filter(|(k, _)| *k != "department")
        .collect();
    refused(
        "smtp.chu-exemple.fr",
        &without,
        "operator.legal_representative.department",
        "is missing",
    );
    refused(
        "smtp.chu-exemple.fr",
        &with("department", "Seine-Maritime(76)"),
        "operator.legal_representative.department",
        "is malformed",
    );
}

#[test]
fn an_existing_key_is_kept_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "test", "smtp.chu-exemple.fr", CHU);
    let cfg = cfg.to_str().expect("UTF-8");
    let key = dir.path().join("smtp.chu-exemple.fr.key");
    let request = dir.path().join("smtp.chu-exemple.fr.csr");
    assert_eq!(csr(dir.path(), &["--config", cfg]).status.code(), Some(0));
    let first = std::fs::read(&key).expect("key");

    let o = csr(dir.path(), &["--config", cfg]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains("smtp.chu-exemple.fr.key exists"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&key).expect("key"), first, "kept");

    // The request alone in the way is refused too, before any key is made.
    std::fs::remove_file(&key).expect("rm key");
    let o = csr(dir.path(), &["--config", cfg]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("smtp.chu-exemple.fr.csr exists"),
        "{}",
        text(&o)
    );
    assert!(!key.exists());

    let o = csr(dir.path(), &["--config", cfg, "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_ne!(std::fs::read(&key).expect("key"), first, "a new key");
    #[cfg(unix)]
    assert_eq!(mode(&key), 0o600);
    openssl_accepts(
        &key,
        &request,
        2048,
        "C = FR, ST = Seine-Maritime (76), O = CENTRE HOSPITALIER UNIVERSITAIRE DE ROUEN, OU = 1760780239, CN = smtp.chu-exemple.fr",
        "smtp.chu-exemple.fr",
    );
}
