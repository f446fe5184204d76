//! The operator's declaration data (`[operator]` in the configuration): what ANS needs in
//! the Annexe 1 form besides what the certificate already says.
//!
//! Only the shape is checked when the configuration loads (unknown keys are errors, one
//! DNS method by construction); the form's rules (FQDN length, FINESS/SIRET keys, domains
//! under `mssante.fr`, the département...) are checked by `annexe1`, `doctor` and `csr`,
//! which name each field.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[operator]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSettings {
    /// The operator's name as written on its contrat d'adhésion.
    pub name: String,
    /// The connector's editor when it is not the operator itself; the Annexe 1 always
    /// names this program (`mssante-gateway <version>`) as the connector.
    #[serde(default)]
    pub connector_editor: Option<String>,
    /// The auto-reply mailbox (exigence EX_GBM_4020): an address in one of our domains.
    pub auto_reply: String,
    /// At most one automatic reply per sender within this time (`"1d"` by default), so
    /// that two auto-responders cannot answer each other forever (RFC 3834 §2).
    #[serde(
        default = "default_auto_reply_window",
        deserialize_with = "crate::duration::deserialize_positive",
        skip_serializing
    )]
    pub auto_reply_window: Duration,
    /// Who ANS writes to about the contract.
    pub legal_representative: LegalRepresentative,
    /// The MSSanté project lead.
    pub project_lead: Contact,
    /// The technical lead, when not the project lead.
    #[serde(default)]
    pub technical_lead: Option<Contact>,
    /// The public incident contacts shown in the liste blanche.
    pub incident_contacts: IncidentContacts,
    /// How the operator's `mssante.fr` sub-domains are resolved.
    pub dns: DnsMethod,
    /// The domains the operator may declare (the Annexe 1 lists those named by
    /// `--add`/`--remove`).
    #[serde(default)]
    pub domains: Vec<DomainDeclaration>,
}

fn default_auto_reply_window() -> Duration {
    Duration::from_secs(86_400)
}

/// The operator's legal representative and structure.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LegalRepresentative {
    /// The structure's name.
    pub structure_name: String,
    /// The structure's FINESS (9 characters) or SIRET (14 digits).
    pub structure_id: String,
    /// The structure's département as the certificate's ST writes it, `"Name (code)"`
    /// (`"Bas-Rhin (67)"`): only `csr` needs it, to request the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// First and last name.
    pub name: String,
    /// Postal address.
    pub address: String,
    /// Phone number.
    pub phone: String,
    /// E-mail address.
    pub email: String,
}

/// A person ANS may contact.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// First and last name.
    pub name: String,
    /// Phone number.
    pub phone: String,
    /// E-mail address (a professional, preferably organisational, address).
    pub email: String,
}

/// The public incident contacts, each written `"phone, e-mail"` as the liste blanche shows
/// them (`ResponsableContact`, `SupportContact`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentContacts {
    /// The project contact, `"phone, e-mail"`.
    pub project: String,
    /// The technical contact, `"phone, e-mail"`.
    pub technical: String,
}

/// The DNS method of the form's section 4: exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum DnsMethod {
    /// ANS delegates the sub-domains to the operator's name servers (preferred).
    Delegation {
        /// The primary name server's FQDN.
        primary: String,
        /// The secondary name server's FQDN.
        secondary: String,
    },
    /// ANS records the operator's mail server in its own zone.
    Redirection {
        /// The mail server's FQDN: must equal our certificate's CN.
        mail_server: String,
    },
}

/// One domain the operator declares.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DomainDeclaration {
    /// FINESS or SIRET of the structure the domain is for.
    pub structure_id: String,
    /// The mail domain, under `mssante.fr`.
    pub domain: String,
    /// What the domain is for (shown in the liste blanche).
    pub description: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Wrap {
        dns: DnsMethod,
    }

    #[derive(Debug, Deserialize)]
    struct Window {
        #[serde(
            default = "default_auto_reply_window",
            deserialize_with = "crate::duration::deserialize_positive"
        )]
        auto_reply_window: Duration,
    }

    #[test]
    fn the_auto_reply_window_defaults_to_a_day_and_must_be_positive() {
        let w: Window = toml::from_str("").expect("default");
        assert_eq!(w.auto_reply_window, Duration::from_secs(86_400));
        let w: Window = toml::from_str("auto_reply_window = \"12h\"").expect("12h");
        assert_eq!(w.auto_reply_window, Duration::from_secs(43_200));
        for bad in ["0s", "soon", "12"] {
            let e = toml::from_str::<Window>(&format!("auto_reply_window = \"{bad}\""))
                .expect_err(bad)
                .to_string();
            assert!(e.contains("auto_reply_window"), "{e}");
        }
    }

    #[test]
    fn one_dns_method_only() {
        let ok: Wrap =
            toml::from_str("[dns]\nmethod = \"redirection\"\nmail_server = \"smtp.x.fr\"\n")
                .expect("redirection");
        assert!(matches!(ok.dns, DnsMethod::Redirection { .. }));
        let both = "[dns]\nmethod = \"redirection\"\nmail_server = \"smtp.x.fr\"\nprimary = \"ns1.x.fr\"\n";
        assert!(toml::from_str::<Wrap>(both).is_err());
        assert!(toml::from_str::<Wrap>("[dns]\nmethod = \"both\"\n").is_err());
    }
}
