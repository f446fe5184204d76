//! `annexe1`: the Annexe 1 declaration ANS asks for to add, remove or switch domains in the
//! liste blanche, pre-filled from the configuration (`[operator]`) and our certificate.
//!
//! Every field is checked by the form's rules before anything is printed, and every
//! problem is reported at once, naming the configuration key, the form's field and the
//! rule. The document keeps the form's French labels and sections, since ANS reads it.

use std::collections::BTreeSet;

use serde::Serialize;

use super::identity_checks::{self as rules, Status, StructureId};
use crate::config::Config;
use crate::operator::{Contact, DnsMethod, OperatorSettings};
use crate::trust::dn::SubjectDn;

/// Most domains one form holds.
pub const MAX_DOMAINS: usize = 10;

/// What the operator asks for in section 5.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Domains to add (`--add`).
    pub add: Vec<String>,
    /// Domains to remove (`--remove`).
    pub remove: Vec<String>,
    /// The domains change operator (`--switch`): ANS waits for both operators' forms.
    pub switch: bool,
}

/// One broken form rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Where to fix it: the configuration key or command-line flag, and the form's field.
    pub field: String,
    /// The rule and the value that breaks it.
    pub rule: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

/// What is asked for one domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// AJOUT.
    Add,
    /// SUPPRESSION.
    Remove,
}

/// One line of section 5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainLine {
    /// FINESS or SIRET of the beneficiary structure.
    pub structure_id: String,
    /// `FINESS` or `SIRET`.
    pub structure_id_kind: &'static str,
    /// The domain (lower case).
    pub domain: String,
    /// Its description.
    pub description: String,
    /// Add or remove.
    pub action: Action,
    /// BASCULE: the domain changes operator.
    pub switch: bool,
}

/// The filled form.
#[derive(Debug, Clone, Serialize)]
pub struct Annexe1 {
    /// `test` or `production`.
    pub espace: &'static str,
    /// The operator's name.
    pub operator_name: String,
    /// DN of each SSL authentication certificate (one or two), in the form's order.
    pub certificate_dns: Vec<String>,
    /// The auto-reply mailbox.
    pub auto_reply: String,
    /// The connector's editor line.
    pub connector_editor: String,
    /// The operator data as configured (contacts, DNS method).
    pub operator: OperatorSettings,
    /// Section 5.
    pub domains: Vec<DomainLine>,
}

/// The connector line of the form: this program and its version.
pub fn connector_name() -> String {
    format!("mssante-gateway {}", env!("CARGO_PKG_VERSION"))
}

/// Writes a DN in the form's order and syntax: `CN=...,OU=...,O=...,ST=...,C=...`.
pub fn form_dn(dn: &SubjectDn) -> String {
    let mut parts = Vec::new();
    if let Some(cn) = &dn.cn {
        parts.push(format!("CN={cn}"));
    }
    for ou in &dn.ou {
        parts.push(format!("OU={ou}"));
    }
    if let Some(o) = &dn.o {
        parts.push(format!("O={o}"));
    }
    if let Some(st) = &dn.st {
        parts.push(format!("ST={st}"));
    }
    if let Some(l) = &dn.l {
        parts.push(format!("L={l}"));
    }
    if let Some(c) = &dn.c {
        parts.push(format!("C={c}"));
    }
    for (t, v) in &dn.others {
        parts.push(format!("{t}={v}"));
    }
    parts.join(",")
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: &str, rule: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_string(),
            rule: rule.into(),
        });
    }
    fn check(&mut self, field: &str, result: Result<(), String>) {
        if let Err(rule) = result {
            self.add(field, rule);
        }
    }
    fn not_empty(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.add(field, "is empty: the form requires it");
        }
    }
    fn contact(&mut self, key: &str, label: &str, c: &Contact) {
        self.not_empty(&format!("{key}.name ({label}, Nom Prénom)"), &c.name);
        self.check(
            &format!("{key}.phone ({label}, Tél)"),
            rules::phone(&c.phone),
        );
        self.check(
            &format!("{key}.email ({label}, Courriel)"),
            rules::email(&c.email),
        );
    }
}

/// Fills and validates the form. `certificates` are the subjects of our SSL
/// certificates (the configured one first, then an optional second one).
pub fn build(
    config: &Config,
    certificates: &[SubjectDn],
    request: &Request,
) -> Result<Annexe1, Vec<FieldError>> {
    let mut e = Errors(Vec::new());
    let Some(op) = &config.operator else {
        return Err(vec![FieldError {
            field: "operator".into(),
            rule: "the [operator] section is missing: add the operator's name, contacts, DNS method and domains (see config/local.toml)".into(),
        }]);
    };

    // Section 1.
    e.not_empty("operator.name (Nom de l'opérateur)", &op.name);
    if certificates.len() > 2 {
        e.add(
            "certificates (DN du certificat d'authentification SSL)",
            "the form holds at most two certificates",
        );
    }
    let delegated = rules::delegated_zones(config);
    for (i, dn) in certificates.iter().enumerate() {
        let field = if i == 0 {
            "tls.certificate (DN du certificat d'authentification SSL)"
        } else {
            "--second-certificate (DN du second certificat d'authentification SSL)"
        };
        for check in rules::check_subject(dn, &delegated) {
            if check.status == Status::Fail {
                e.add(field, format!("{}: {}", check.name, check.message));
            }
        }
    }
    let cn = certificates
        .first()
        .and_then(|dn| dn.cn.clone())
        .unwrap_or_default();
    let declared: BTreeSet<String> = config
        .local_domains
        .iter()
        .cloned()
        .chain(op.domains.iter().map(|d| d.domain.to_ascii_lowercase()))
        .collect();
    const AUTO: &str = "operator.auto_reply (Boîte aux lettres de réponse automatique)";
    match rules::email(&op.auto_reply) {
        Err(rule) => e.add(AUTO, rule),
        Ok(()) => {
            let domain = op
                .auto_reply
                .rsplit_once('@')
                .map(|(_, d)| d.trim().to_ascii_lowercase())
                .unwrap_or_default();
            if !declared.contains(&domain) {
                e.add(
                    AUTO,
                    format!("\"{}\" is not in one of our domains ({}): the auto-reply mailbox must be an MSSanté mailbox of the operator", op.auto_reply, declared.iter().cloned().collect::<Vec<_>>().join(", ")),
                );
            }
        }
    }
    if let Some(editor) = &op.connector_editor {
        e.not_empty(
            "operator.connector_editor (Nom de l'éditeur de connecteur)",
            editor,
        );
    }

    // Section 2.
    let lr = &op.legal_representative;
    const LR: &str = "operator.legal_representative";
    e.not_empty(
        &format!("{LR}.structure_name (Nom de la structure)"),
        &lr.structure_name,
    );
    if let Err(rule) = rules::finess_or_siret(&lr.structure_id) {
        e.add(&format!("{LR}.structure_id (Identifiant structure)"), rule);
    }
    e.not_empty(&format!("{LR}.name (Nom Prénom)"), &lr.name);
    e.not_empty(&format!("{LR}.address (Adresse postale)"), &lr.address);
    e.check(&format!("{LR}.phone (Téléphone)"), rules::phone(&lr.phone));
    e.check(&format!("{LR}.email (Courriel)"), rules::email(&lr.email));
    e.contact("operator.project_lead", "chef de projet", &op.project_lead);
    if let Some(t) = &op.technical_lead {
        e.contact("operator.technical_lead", "responsable technique", t);
    }
    e.check(
        "operator.incident_contacts.project (Contact projet MSSanté de l'opérateur)",
        rules::phone_and_email(&op.incident_contacts.project),
    );
    e.check(
        "operator.incident_contacts.technical (Contact technique MSSanté de l'opérateur)",
        rules::phone_and_email(&op.incident_contacts.technical),
    );

    // Section 4: one method, by construction of `DnsMethod`.
    match &op.dns {
        DnsMethod::Delegation { primary, secondary } => {
            e.check(
                "operator.dns.primary (Méthode 1 : délégation, Primaire)",
                rules::fqdn(primary),
            );
            e.check(
                "operator.dns.secondary (Méthode 1 : délégation, Secondaire)",
                rules::fqdn(secondary),
            );
        }
        DnsMethod::Redirection { mail_server } => {
            const MS: &str = "operator.dns.mail_server (Méthode 2 : redirection, Nom du serveur de messagerie MSSanté)";
            e.check(MS, rules::fqdn(mail_server));
            if !mail_server.eq_ignore_ascii_case(&cn) {
                e.add(
                    MS,
                    format!("\"{mail_server}\" differs from the certificate's CN \"{cn}\": the mail server's name (the MX target) must equal the CN, since operators check hostname/CN coherence"),
                );
            }
        }
    }

    // Section 5.
    let domains = domain_lines(op, request, &mut e);

    if !e.0.is_empty() {
        return Err(e.0);
    }
    Ok(Annexe1 {
        espace: config.espace.as_str(),
        operator_name: op.name.clone(),
        certificate_dns: certificates.iter().map(form_dn).collect(),
        auto_reply: op.auto_reply.clone(),
        connector_editor: match &op.connector_editor {
            Some(editor) => format!("{editor} (connecteur {})", connector_name()),
            None => connector_name(),
        },
        operator: op.clone(),
        domains,
    })
}

fn domain_lines(op: &OperatorSettings, request: &Request, e: &mut Errors) -> Vec<DomainLine> {
    let norm = |d: &String| d.trim().trim_end_matches('.').to_ascii_lowercase();
    let add: Vec<String> = request.add.iter().map(norm).collect();
    let remove: Vec<String> = request.remove.iter().map(norm).collect();
    if request.switch && add.is_empty() && remove.is_empty() {
        e.add(
            "--switch (BASCULE)",
            "a switch is asked for domains being added or removed: name them with --add or --remove",
        );
    }
    let total = add.len() + remove.len();
    if total > MAX_DOMAINS {
        e.add(
            "--add/--remove (section 5)",
            format!("{total} domains: one form holds at most {MAX_DOMAINS}; send several forms"),
        );
    }
    let mut seen = BTreeSet::new();
    let mut lines = Vec::new();
    for (domain, action) in add
        .iter()
        .map(|d| (d, Action::Add))
        .chain(remove.iter().map(|d| (d, Action::Remove)))
    {
        if !seen.insert(domain.clone()) {
            let rule = if add.contains(domain) && remove.contains(domain) {
                format!("\"{domain}\" is both added and removed: a domain is either AJOUT or SUPPRESSION (with BASCULE when it changes operator)")
            } else {
                format!("\"{domain}\" is listed twice")
            };
            e.add("--add/--remove (AJOUT/SUPPRESSION)", rule);
            continue;
        }
        let flag = match action {
            Action::Add => "--add",
            Action::Remove => "--remove",
        };
        if let Err(rule) = rules::fqdn(domain) {
            e.add(&format!("{flag} (Nom du domaine)"), rule);
        }
        if !domain.ends_with(".mssante.fr") {
            e.add(
                &format!("{flag} (Nom du domaine)"),
                format!("\"{domain}\" is not under mssante.fr: MSSanté domains end in .mssante.fr (e.g. ch-xyz.mssante.fr)"),
            );
        }
        let Some(decl) = op
            .domains
            .iter()
            .find(|d| d.domain.trim().eq_ignore_ascii_case(domain))
        else {
            e.add(
                "operator.domains",
                format!("no [[operator.domains]] entry for \"{domain}\": add one with structure_id (FINESS or SIRET), domain and description"),
            );
            continue;
        };
        let kind = match rules::finess_or_siret(decl.structure_id.trim()) {
            Ok(StructureId::Finess) => "FINESS",
            Ok(StructureId::Siret) => "SIRET",
            Err(rule) => {
                e.add(
                    &format!("operator.domains[{domain}].structure_id (Identifiant de la structure bénéficiant du nom de domaine)"),
                    rule,
                );
                ""
            }
        };
        e.not_empty(
            &format!("operator.domains[{domain}].description (Description du domaine)"),
            &decl.description,
        );
        lines.push(DomainLine {
            structure_id: decl.structure_id.trim().to_string(),
            structure_id_kind: kind,
            domain: domain.clone(),
            description: decl.description.trim().to_string(),
            action,
            switch: request.switch,
        });
    }
    lines
}

/// Escapes a value for a Markdown table cell.
fn cell(value: &str) -> String {
    value.replace('|', "\\|").replace('\n', " ")
}

fn check(on: bool) -> &'static str {
    if on {
        "[x]"
    } else {
        "[ ]"
    }
}

/// The filled form as Markdown, in the form's sections and French labels.
pub fn to_markdown(a: &Annexe1) -> String {
    let op = &a.operator;
    let mut s = String::new();
    let mut line = |l: &str| {
        s.push_str(l);
        s.push('\n');
    };
    line("# Déclaration de domaines MSSanté – Annexe 1");
    line("");
    line(&format!(
        "*Pré-rempli par {} à partir de la configuration et du certificat du connecteur.*",
        connector_name()
    ));
    line("");
    line(&format!(
        "Je renseigne l'annexe 1 pour l'espace de : {} PRODUCTION {} TEST (une seule case)",
        check(a.espace == "production"),
        check(a.espace == "test")
    ));
    line("");
    line("## 1. Identification de l'opérateur");
    line("");
    line("| Champ | Valeur |");
    line("|---|---|");
    line(&format!(
        "| Nom de l'opérateur (tel que déclaré sur votre contrat d'adhésion) | {} |",
        cell(&a.operator_name)
    ));
    for (i, dn) in a.certificate_dns.iter().enumerate() {
        let label = if i == 0 {
            "DN du certificat d'authentification SSL"
        } else {
            "Si plusieurs certificats, DN du second certificat d'authentification SSL"
        };
        line(&format!("| {label} | `{}` |", cell(dn)));
    }
    line(&format!(
        "| Boîte aux lettres de réponse automatique | {} |",
        cell(&a.auto_reply)
    ));
    line(&format!(
        "| Nom de l'éditeur de connecteur | {} |",
        cell(&a.connector_editor)
    ));
    line("");
    line("Le nom du serveur de messagerie (hostname enregistré dans le champ MX) est identique au CN du certificat déclaré ci-dessus.");
    line("");
    line("## 2. Coordonnées des contacts utilisés par le gestionnaire de l'espace de confiance");
    line("");
    line("### Coordonnées du représentant légal de l'opérateur");
    line("");
    let lr = &op.legal_representative;
    let kind = match rules::finess_or_siret(lr.structure_id.trim()) {
        Ok(StructureId::Finess) => " (FINESS)",
        Ok(StructureId::Siret) => " (SIRET)",
        Err(_) => "",
    };
    line("| Champ | Valeur |");
    line("|---|---|");
    line(&format!(
        "| Nom de la structure | {} |",
        cell(&lr.structure_name)
    ));
    line(&format!(
        "| Identifiant structure | {}{kind} |",
        cell(&lr.structure_id)
    ));
    line(&format!("| Nom Prénom | {} |", cell(&lr.name)));
    line(&format!("| Adresse postale | {} |", cell(&lr.address)));
    line(&format!("| Téléphone | {} |", cell(&lr.phone)));
    line(&format!("| Courriel | {} |", cell(&lr.email)));
    line("");
    line("### Coordonnées du chef de projet et du responsable technique");
    line("");
    line("| | Chef de projet | Responsable technique (si différent du chef de projet) |");
    line("|---|---|---|");
    let t = op.technical_lead.as_ref();
    let tech = |f: fn(&Contact) -> &String| t.map(|c| cell(f(c))).unwrap_or_default();
    line(&format!(
        "| Nom Prénom | {} | {} |",
        cell(&op.project_lead.name),
        tech(|c| &c.name)
    ));
    line(&format!(
        "| Tél | {} | {} |",
        cell(&op.project_lead.phone),
        tech(|c| &c.phone)
    ));
    line(&format!(
        "| Courriel | {} | {} |",
        cell(&op.project_lead.email),
        tech(|c| &c.email)
    ));
    line("");
    line("### Coordonnées des contacts en cas d'incident rencontré entre opérateurs (coordonnées affichées publiquement au sein de la liste blanche)");
    line("");
    line("| Contact | Téléphone, courriel |");
    line("|---|---|");
    line(&format!(
        "| Contact projet MSSanté de l'opérateur (utilisé pour les incidents et la communication de l'Espace de Confiance) | {} |",
        cell(&op.incident_contacts.project)
    ));
    line(&format!(
        "| Contact technique MSSanté de l'opérateur (utilisé pour les incidents et la communication de l'Espace de Confiance) | {} |",
        cell(&op.incident_contacts.technical)
    ));
    line("");
    line("## 3. Ajout/Modification du DN inscrit en liste blanche");
    line("");
    line("Sans objet : aucune modification de DN n'est demandée par ce document (en cas de modification du CN, joindre un formulaire 413 pour l'espace de production ou 414 pour l'espace de test).");
    line("");
    line("## 4. Choix de la méthode de résolution DNS");
    line("");
    match &op.dns {
        DnsMethod::Delegation { primary, secondary } => {
            line(&format!(
                "- [x] Méthode 1 : la délégation (à privilégier). Nom des serveurs DNS (primaire / secondaire) de l'opérateur : Primaire : `{}` ; Secondaire : `{}`",
                cell(primary),
                cell(secondary)
            ));
            line("- [ ] Méthode 2 : la redirection");
        }
        DnsMethod::Redirection { mail_server } => {
            line("- [ ] Méthode 1 : la délégation (à privilégier)");
            line(&format!(
                "- [x] Méthode 2 : la redirection. Nom du serveur de messagerie MSSanté de l'opérateur : `{}`",
                cell(mail_server)
            ));
        }
    }
    line("");
    line("## 5. Ajout/retrait/bascule de domaines dans la liste blanche MSSanté");
    line("");
    if a.domains.is_empty() {
        line("Aucun domaine à ajouter, supprimer ou basculer.");
    } else {
        line("| Identifiant de la structure bénéficiant du nom de domaine (FINESS, SIRET) | Nom du domaine | Description du domaine | AJOUT | SUPPRESSION | BASCULE |");
        line("|---|---|---|---|---|---|");
        for d in &a.domains {
            let mark = |on: bool| if on { "X" } else { "" };
            line(&format!(
                "| {} ({}) | {} | {} | {} | {} | {} |",
                cell(&d.structure_id),
                d.structure_id_kind,
                cell(&d.domain),
                cell(&d.description),
                mark(d.action == Action::Add),
                mark(d.action == Action::Remove),
                mark(d.switch)
            ));
        }
        if a.domains.iter().any(|d| d.switch) {
            line("");
            line("Bascule : la demande sera traitée à réception d'une annexe 1 pour l'ajout et d'une annexe 1 pour la suppression de ce domaine, de la part des 2 opérateurs concernés.");
        }
    }
    line("");
    line("Je m'engage à réaliser les demandes de référencement et de retrait de domaines de bonne foi et à ce que les noms de domaines référencés ne soient pas susceptibles de porter atteinte à l'ordre public ou aux droits de propriété intellectuelle d'un tiers.");
    line("");
    line("Date : ……………… Nom, Prénom : ……………… Signature et cachet de la structure");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::DomainDeclaration;
    use std::path::Path;

    fn config() -> Config {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/local.toml");
        Config::load(&path).expect("config/local.toml loads")
    }

    fn our_dn(config: &Config) -> Vec<SubjectDn> {
        vec![config.tls.identity.info().subject.clone()]
    }

    fn add(domains: &[&str]) -> Request {
        Request {
            add: domains.iter().map(|d| d.to_string()).collect(),
            ..Request::default()
        }
    }

    /// Builds with one change to the operator data and returns the errors.
    fn errors_with(
        change: impl FnOnce(&mut OperatorSettings),
        request: &Request,
    ) -> Vec<FieldError> {
        let mut c = config();
        if let Some(op) = c.operator.as_mut() {
            change(op);
        }
        let dns = our_dn(&c);
        build(&c, &dns, request).expect_err("must be refused")
    }

    fn single(errors: &[FieldError], field: &str, rule: &str) {
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].field.starts_with(field), "{errors:?}");
        assert!(errors[0].rule.contains(rule), "{errors:?}");
    }

    #[test]
    fn the_example_configuration_fills_the_form() {
        let c = config();
        let a = build(
            &c,
            &our_dn(&c),
            &add(&["gateway.test.mssante.fr", "labo.gateway.test.mssante.fr"]),
        )
        .expect("valid");
        assert_eq!(a.espace, "test");
        assert_eq!(
            a.certificate_dns,
            vec!["CN=smtp.gateway.test.mssante.fr,OU=1750000010,O=CH GATEWAY TEST,ST=Paris (75),C=FR"]
        );
        assert_eq!(a.domains.len(), 2);
        assert_eq!(a.domains[1].structure_id_kind, "FINESS");
        let md = to_markdown(&a);
        assert!(md.contains("[ ] PRODUCTION [x] TEST"));
        assert!(md.contains("| 750000028 (FINESS) | labo.gateway.test.mssante.fr | Laboratoire du CH Gateway Test | X |  |  |"), "{md}");
    }

    #[test]
    fn missing_operator_section_is_one_error() {
        let mut c = config();
        c.operator = None;
        let dns = our_dn(&c);
        let errors = build(&c, &dns, &Request::default()).expect_err("refused");
        single(&errors, "operator", "section is missing");
    }

    #[test]
    fn fqdn_longer_than_63_characters_is_refused() {
        let long = format!("{}.example.fr", "n".repeat(60));
        let errors = errors_with(
            |op| {
                op.dns = DnsMethod::Delegation {
                    primary: long.clone(),
                    secondary: "ns2.example.fr".into(),
                }
            },
            &Request::default(),
        );
        single(&errors, "operator.dns.primary", "at most 63");
    }

    #[test]
    fn fqdn_with_other_characters_is_refused() {
        let errors = errors_with(
            |op| {
                op.dns = DnsMethod::Delegation {
                    primary: "ns1.example.fr".into(),
                    secondary: "ns_2.example.fr".into(),
                }
            },
            &Request::default(),
        );
        single(&errors, "operator.dns.secondary", "only letters, digits");
    }

    #[test]
    fn redirection_to_another_name_than_the_cn_is_refused() {
        let errors = errors_with(
            |op| {
                op.dns = DnsMethod::Redirection {
                    mail_server: "mx.gateway.test.mssante.fr".into(),
                }
            },
            &Request::default(),
        );
        // Without the delegation, our CN under mssante.fr breaks the CN rule too.
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].field.starts_with("tls.certificate"), "{errors:?}");
        assert!(
            errors[0].rule.contains("ANS's zone mssante.fr"),
            "{errors:?}"
        );
        assert!(
            errors[1].field.starts_with("operator.dns.mail_server"),
            "{errors:?}"
        );
        assert!(
            errors[1].rule.contains("differs from the certificate's CN"),
            "{errors:?}"
        );
    }

    #[test]
    fn domain_outside_mssante_fr_is_refused() {
        let errors = errors_with(
            |op| {
                op.domains.push(DomainDeclaration {
                    structure_id: "750000010".into(),
                    domain: "ch-xyz.example.fr".into(),
                    description: "x".into(),
                })
            },
            &add(&["ch-xyz.example.fr"]),
        );
        single(&errors, "--add", "not under mssante.fr");
    }

    #[test]
    fn beneficiary_with_a_wrong_finess_key_is_refused() {
        let errors = errors_with(
            |op| op.domains[0].structure_id = "750000011".into(),
            &add(&["gateway.test.mssante.fr"]),
        );
        single(
            &errors,
            "operator.domains[gateway.test.mssante.fr].structure_id",
            "check digit",
        );
    }

    #[test]
    fn legal_representative_with_a_wrong_siret_key_is_refused() {
        let errors = errors_with(
            |op| op.legal_representative.structure_id = "12345678200003".into(),
            &Request::default(),
        );
        single(
            &errors,
            "operator.legal_representative.structure_id",
            "SIRET",
        );
    }

    #[test]
    fn more_than_ten_domains_is_refused() {
        let names: Vec<String> = (0..11).map(|i| format!("d{i}.mssante.fr")).collect();
        let errors = errors_with(
            |op| {
                op.domains = names
                    .iter()
                    .map(|d| DomainDeclaration {
                        structure_id: "750000010".into(),
                        domain: d.clone(),
                        description: "x".into(),
                    })
                    .collect()
            },
            &Request {
                add: names.clone(),
                ..Request::default()
            },
        );
        single(&errors, "--add/--remove", "at most 10");
    }

    #[test]
    fn a_domain_both_added_and_removed_is_refused() {
        let errors = errors_with(
            |_| {},
            &Request {
                add: vec!["gateway.test.mssante.fr".into()],
                remove: vec!["gateway.test.mssante.fr".into()],
                switch: false,
            },
        );
        single(&errors, "--add/--remove", "both added and removed");
    }

    #[test]
    fn switch_without_add_or_remove_is_refused() {
        let errors = errors_with(
            |_| {},
            &Request {
                switch: true,
                ..Request::default()
            },
        );
        single(&errors, "--switch", "--add or --remove");
    }

    #[test]
    fn switch_with_remove_marks_the_line() {
        let c = config();
        let request = Request {
            remove: vec!["labo.gateway.test.mssante.fr".into()],
            switch: true,
            ..Request::default()
        };
        let a = build(&c, &our_dn(&c), &request).expect("valid");
        assert_eq!(a.domains[0].action, Action::Remove);
        assert!(a.domains[0].switch);
        assert!(to_markdown(&a).contains("|  | X | X |"));
    }

    #[test]
    fn undeclared_domain_is_refused() {
        let errors = errors_with(|_| {}, &add(&["inconnu.mssante.fr"]));
        single(&errors, "operator.domains", "no [[operator.domains]] entry");
    }

    #[test]
    fn auto_reply_outside_our_domains_is_refused() {
        let errors = errors_with(
            |op| op.auto_reply = "reponse@autre.fr".into(),
            &Request::default(),
        );
        single(&errors, "operator.auto_reply", "not in one of our domains");
    }

    #[test]
    fn malformed_contacts_are_refused() {
        let errors = errors_with(
            |op| op.incident_contacts.technical = "support@gateway.test.mssante.fr".into(),
            &Request::default(),
        );
        single(
            &errors,
            "operator.incident_contacts.technical",
            "\"phone, e-mail\"",
        );
        let errors = errors_with(
            |op| op.project_lead.email = "projet".into(),
            &Request::default(),
        );
        single(&errors, "operator.project_lead.email", "e-mail address");
    }

    #[test]
    fn certificate_dn_outside_the_igc_sante_form_is_refused() {
        let c = config();
        let bad = SubjectDn::parse(
            "CN=smtp.gateway.test.mssante.fr,OU=750000010,O=Hôpital Test,ST=Paris (75),C=FR",
        )
        .expect("dn");
        let errors = build(&c, &[bad], &Request::default()).expect_err("refused");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors
            .iter()
            .all(|e| e.field.starts_with("tls.certificate")));
        assert!(errors[0].rule.contains("certificate.ou"));
        assert!(errors[1].rule.contains("HOPITAL TEST"));
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let errors = errors_with(
            |op| {
                op.name = String::new();
                op.legal_representative.phone = "abc".into();
                op.dns = DnsMethod::Redirection {
                    mail_server: "other.example.fr".into(),
                };
            },
            &Request {
                switch: true,
                ..Request::default()
            },
        );
        // The name, the phone, the switch alone, the mail server that is not the CN, and
        // the CN under mssante.fr without the delegation.
        assert_eq!(errors.len(), 5, "{errors:?}");
    }
}
