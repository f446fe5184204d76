//! The operator tools as an operator runs them: `annexe1` and `doctor` on the bundled test
//! configuration, and `doctor` on installations with the problems it must name.

use std::path::PathBuf;
use std::process::{Command, Output};

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
