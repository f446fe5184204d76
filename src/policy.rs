//! Every accept/reject decision of the inbound path, as pure functions.
//!
//! A decision is `Ok(())` or a [`Refusal`] carrying the reply to send and a stable `reason`
//! label shared by logs and metrics. Permanent refusals are 5xx; refusals caused by our own
//! state are 4xx so that the peer tries again later.

use serde::Deserialize;

use crate::smtp::{Enhanced, Reply};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::trust::verify::{verify_chain, CertError, PeerIdentity, Usage};
use crate::trust::TrustStore;
use crate::whitelist::Whitelist;

/// A refused step: the reply and the reason label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the peer is told.
    pub reply: Reply,
    /// The stable label for logs and metrics.
    pub reason: &'static str,
}

impl Refusal {
    fn new(code: u16, e: (u8, u16, u16), text: impl Into<String>, reason: &'static str) -> Self {
        Refusal {
            reply: Reply::new(code, Enhanced(e.0, e.1, e.2), text.into()),
            reason,
        }
    }
}

/// The peer's certificate as checked after the TLS handshake: `None` before TLS.
pub type PeerCertificate = Option<Result<PeerIdentity, CertError>>;

/// MAIL FROM from another operator needs TLS and a valid IGC Santé client certificate.
pub fn check_peer_certificate(peer: &PeerCertificate) -> Result<&PeerIdentity, Refusal> {
    match peer {
        None => Err(Refusal::new(
            530,
            (5, 7, 0),
            "Must issue a STARTTLS command first",
            "tls_required",
        )),
        Some(Ok(id)) => Ok(id),
        Some(Err(CertError::Missing)) => Err(Refusal::new(
            530,
            (5, 7, 1),
            "A client certificate is required: present your IGC Santé server certificate",
            CertError::Missing.client_reason(),
        )),
        Some(Err(e @ (CertError::CrlExpired { .. } | CertError::CrlUnavailable))) => {
            Err(Refusal::new(
                451,
                (4, 7, 1),
                format!("Cannot check your certificate now: {e}"),
                e.client_reason(),
            ))
        }
        Some(Err(e)) => Err(Refusal::new(
            550,
            (5, 7, 1),
            format!("Client certificate refused: {e}"),
            e.client_reason(),
        )),
    }
}

/// How the EHLO name is held against the peer certificate's CN (hostname/CN coherence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EhloCheck {
    /// A mismatch refuses MAIL (`ehlo_cn_mismatch`).
    #[default]
    Enforce,
    /// A mismatch is logged and counted, and the mail accepted.
    Log,
    /// Not checked.
    Off,
}

/// Whether the peer's IP address must resolve back (forward-confirmed reverse DNS) to its
/// certificate's CN. Off by default: many operators' MTAs sit behind NAT or load
/// balancers whose PTR records name something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FcrdnsCheck {
    /// A mismatch refuses MAIL (`fcrdns_mismatch`).
    Enforce,
    /// A mismatch is logged and counted.
    Log,
    /// Not checked.
    #[default]
    Off,
}

/// What the DNS said about the peer's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReverseDns {
    /// The forward-confirmed names of the address.
    Names(Vec<String>),
    /// The DNS could not answer now.
    Unavailable(String),
}

/// Forward-confirmed reverse DNS against the certificate: one confirmed name of the peer's
/// address must be its CN or a DNS SAN. `Ok(Some(reason))` is a mismatch noted in log mode.
pub fn check_fcrdns(
    mode: FcrdnsCheck,
    dns: &ReverseDns,
    id: &PeerIdentity,
) -> Result<Option<&'static str>, Refusal> {
    if mode == FcrdnsCheck::Off {
        return Ok(None);
    }
    let refusal = match dns {
        ReverseDns::Names(names) if names.iter().any(|n| names_match(n, id)) => return Ok(None),
        ReverseDns::Names(names) => Refusal::new(
            550,
            (5, 7, 1),
            format!(
                "Reverse DNS of your address ({}) does not confirm the certificate CN {}",
                if names.is_empty() {
                    "no forward-confirmed name".to_string()
                } else {
                    names.join(", ")
                },
                id.cn.as_deref().unwrap_or("(none)")
            ),
            "fcrdns_mismatch",
        ),
        ReverseDns::Unavailable(e) => Refusal::new(
            451,
            (4, 4, 3),
            format!("Reverse DNS lookup failed ({e}); try again later"),
            "fcrdns_unavailable",
        ),
    };
    match mode {
        FcrdnsCheck::Log => Ok(Some(refusal.reason)),
        _ => Err(refusal),
    }
}

/// What MAIL FROM from a peer operator is judged on.
#[derive(Debug, Clone, Copy)]
pub struct SenderContext<'a> {
    /// The client certificate as verified after the handshake.
    pub peer: &'a PeerCertificate,
    /// The EHLO/HELO name.
    pub helo: &'a str,
    /// The current liste blanche.
    pub whitelist: &'a Whitelist,
    /// The liste blanche is past its maximum age: we cannot judge, the peer must retry.
    pub whitelist_stale: bool,
    /// The hostname/CN coherence mode.
    pub ehlo_check: EhloCheck,
    /// Which certificate names the EHLO name may equal.
    pub ehlo_names: EhloNames,
}

/// An accepted sender, with what was noticed but not enforced (for the logs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Accepted {
    /// Reason labels of checks that failed in log-only mode.
    pub noted: Vec<&'static str>,
}

/// MAIL FROM from a peer operator: a valid IGC Santé certificate, whose subject is on the
/// liste blanche, whose CN is the EHLO name, and — unless the reverse path is `<>` — a
/// sender domain that is listed with that same certificate DN.
pub fn check_sender(ctx: &SenderContext<'_>, reverse_path: &str) -> Result<Accepted, Refusal> {
    let id = check_peer_certificate(ctx.peer)?;
    if ctx.whitelist_stale {
        return Err(Refusal::new(
            451,
            (4, 7, 1),
            "Our copy of the liste blanche is out of date; try again later",
            "whitelist_stale",
        ));
    }
    if !ctx.whitelist.is_listed_dn(&id.subject) {
        return Err(Refusal::new(
            550,
            (5, 7, 1),
            format!(
                "Certificate subject {} is not on the liste blanche",
                id.subject_dn
            ),
            "dn_not_listed",
        ));
    }
    let mut accepted = Accepted::default();
    if ctx.ehlo_check != EhloCheck::Off && !ehlo_matches(ctx.helo, id, ctx.ehlo_names) {
        let mismatch = Refusal::new(
            550,
            (5, 7, 1),
            format!(
                "EHLO name {} does not match the certificate CN {}",
                ctx.helo,
                id.cn.as_deref().unwrap_or("(none)")
            ),
            "ehlo_cn_mismatch",
        );
        if ctx.ehlo_check == EhloCheck::Enforce {
            return Err(mismatch);
        }
        accepted.noted.push(mismatch.reason);
    }
    if reverse_path.is_empty() {
        // Bounces have no sender domain; a listed operator may send them.
        return Ok(accepted);
    }
    let Some((_, domain)) = reverse_path.rsplit_once('@') else {
        return Err(Refusal::new(
            550,
            (5, 1, 7),
            "Sender address must be user@domain",
            "sender_syntax",
        ));
    };
    if !ctx.whitelist.is_listed_domain(domain) {
        return Err(Refusal::new(
            550,
            (5, 7, 1),
            format!("Sender domain {domain} is not on the liste blanche"),
            "sender_domain_not_listed",
        ));
    }
    if !ctx.whitelist.domain_served_by(domain, &id.subject) {
        return Err(Refusal::new(
            550,
            (5, 7, 1),
            format!(
                "Sender domain {domain} is not listed for certificate {}",
                id.subject_dn
            ),
            "sender_dn_mismatch",
        ));
    }
    Ok(accepted)
}

/// Which names of the peer's certificate its EHLO name may equal (`policy.ehlo_names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EhloNames {
    /// The CN only: the espace's hostname/CN coherence rule.
    #[default]
    Cn,
    /// The CN or one of the certificate's dNSName SANs.
    CnOrSan,
}

/// Whether `helo` is the certificate's CN (or, with [`EhloNames::CnOrSan`], one of its
/// dNSName SANs), compared case-insensitively with any trailing dot ignored.
pub fn ehlo_matches(helo: &str, id: &PeerIdentity, names: EhloNames) -> bool {
    match names {
        EhloNames::CnOrSan => names_match(helo, id),
        EhloNames::Cn => id.cn.as_deref().is_some_and(|cn| same_host(helo, cn)),
    }
}

/// Whether `helo` names the certificate: its CN or one of its dNSName SANs, compared
/// case-insensitively with any trailing dot ignored.
pub fn names_match(helo: &str, id: &PeerIdentity) -> bool {
    id.cn
        .iter()
        .chain(id.dns_names.iter())
        .any(|name| same_host(helo, name))
}

/// What the checks of a peer operator's server certificate found, each on its own:
/// outbound delivery wants the [`ServerJudgement::verdict`], `probe` reports every part.
#[derive(Debug)]
pub struct ServerJudgement {
    /// The chain against the espace's anchors, as a TLS server certificate.
    pub chain: Result<PeerIdentity, CertError>,
    /// Its CN or a dNSName is the MX host we connected to (false when the chain failed).
    pub names_host: bool,
    /// The liste blanche lists its subject DN for the recipient domain; `None` when the
    /// chain failed or there is no list.
    pub listed: Option<bool>,
}

/// Why a server may not have a message: the reason label of logs and metrics, a text, and
/// the server's DN when the chain verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRefusal {
    /// `server_cert_*`, `mx_cn_mismatch`, `recipient_dn_mismatch` or `whitelist_unavailable`.
    pub reason: &'static str,
    /// What was found.
    pub detail: String,
    /// The server's subject DN, when known.
    pub subject_dn: Option<String>,
}

/// Judges the chain a server presented at STARTTLS for a message to `domain` sent to MX
/// host `mx_host`: it must chain to the espace's anchors as a server, name the MX host,
/// and carry a DN the liste blanche lists for the domain.
pub fn judge_server(
    chain: &[CertificateDer<'_>],
    mx_host: &str,
    domain: &str,
    trust: &TrustStore,
    list: Option<&Whitelist>,
    now: UnixTime,
) -> ServerJudgement {
    let chain = verify_chain(chain, trust, now, Usage::Server);
    let (names_host, listed) = match &chain {
        Ok(id) => (
            names_match(mx_host, id),
            list.map(|l| l.domain_served_by(domain, &id.subject)),
        ),
        Err(_) => (false, None),
    };
    ServerJudgement {
        chain,
        names_host,
        listed,
    }
}

impl ServerJudgement {
    /// The server's identity when every check passed, else the first refusal.
    pub fn verdict(self, mx_host: &str, domain: &str) -> Result<PeerIdentity, ServerRefusal> {
        let identity = self.chain.map_err(|e| ServerRefusal {
            reason: e.server_reason(),
            detail: e.to_string(),
            subject_dn: None,
        })?;
        if !self.names_host {
            return Err(ServerRefusal {
                reason: "mx_cn_mismatch",
                detail: format!(
                    "the certificate of {mx_host} names {} (CN) and {:?} (DNS names), not the MX host",
                    identity.cn.as_deref().unwrap_or("no CN"),
                    identity.dns_names
                ),
                subject_dn: Some(identity.subject_dn),
            });
        }
        match self.listed {
            Some(true) => Ok(identity),
            Some(false) => Err(ServerRefusal {
                reason: "recipient_dn_mismatch",
                detail: format!(
                    "the liste blanche does not list certificate {} for {domain}",
                    identity.subject_dn
                ),
                subject_dn: Some(identity.subject_dn),
            }),
            None => Err(ServerRefusal {
                reason: "whitelist_unavailable",
                detail: "no liste blanche to check the server's DN against".into(),
                subject_dn: Some(identity.subject_dn),
            }),
        }
    }
}

/// Two host names are the same: case-insensitively, a trailing dot ignored; an empty
/// name matches nothing.
fn same_host(given: &str, name: &str) -> bool {
    let given = given.trim().trim_end_matches('.');
    !given.is_empty() && name.trim_end_matches('.').eq_ignore_ascii_case(given)
}

/// A recipient whose local part carries a route (`%` or `!`, or an `@` inside a quoted
/// local part) would be relayed onwards by many internal servers (Postfix's percent hack,
/// UUCP bang paths): refused, so that nothing leaves through our internal server.
pub fn check_routing(address: &str) -> Result<(), Refusal> {
    let local = address.rsplit_once('@').map_or(address, |(local, _)| local);
    let quoted_at = local.starts_with('"') && local.contains('@');
    if local.contains('%') || local.contains('!') || quoted_at {
        return Err(Refusal::new(
            501,
            (5, 1, 3),
            "Routing in the local part (%, ! or a quoted @) is not accepted",
            "routing_address",
        ));
    }
    Ok(())
}

/// RCPT TO is accepted only for our own domains: the gateway is never an open relay.
pub fn check_recipient(address: &str, local_domains: &[String]) -> Result<(), Refusal> {
    let domain = match address.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => domain,
        _ => {
            return Err(Refusal::new(
                550,
                (5, 1, 3),
                "Recipient address must be user@domain",
                "recipient_syntax",
            ))
        }
    };
    let domain = domain.trim_end_matches('.');
    if local_domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
        Ok(())
    } else {
        Err(Refusal::new(
            550,
            (5, 7, 1),
            format!("Relay access denied: {domain} is not a domain of this operator"),
            "relay_denied",
        ))
    }
}

/// MAIL FROM on the submission listener (our internal mail server sending out): the
/// sender must be one of ours, or `<>` (our server's own bounces).
pub fn check_internal_sender(reverse_path: &str, local_domains: &[String]) -> Result<(), Refusal> {
    if reverse_path.is_empty() {
        return Ok(());
    }
    let domain = reverse_path
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.'));
    match domain {
        Some(d) if local_domains.iter().any(|l| l.eq_ignore_ascii_case(d)) => Ok(()),
        Some(d) => Err(Refusal::new(
            550,
            (5, 7, 1),
            format!("Sender domain {d} is not a domain of this operator"),
            "sender_not_local",
        )),
        None => Err(Refusal::new(
            550,
            (5, 1, 7),
            "Sender address must be user@domain",
            "sender_syntax",
        )),
    }
}

/// RCPT TO on the submission listener: our own domains go to the internal relay; any other
/// domain must be on the liste blanche, so that mail never leaves the espace de confiance.
pub fn check_outbound_recipient(
    address: &str,
    local_domains: &[String],
    whitelist: &Whitelist,
    whitelist_stale: bool,
) -> Result<(), Refusal> {
    let domain = match address.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            domain.trim_end_matches('.')
        }
        _ => {
            return Err(Refusal::new(
                550,
                (5, 1, 3),
                "Recipient address must be user@domain",
                "recipient_syntax",
            ))
        }
    };
    if local_domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
        return Ok(());
    }
    if whitelist_stale {
        return Err(Refusal::new(
            451,
            (4, 7, 1),
            "Our copy of the liste blanche is out of date; try again later",
            "whitelist_stale",
        ));
    }
    if whitelist.is_listed_domain(domain) {
        Ok(())
    } else {
        Err(Refusal::new(
            550,
            (5, 7, 1),
            format!(
                "{domain} is not on the liste blanche: mail may not leave the espace de confiance"
            ),
            "recipient_domain_not_listed",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_local_parts_are_refused_and_plain_ones_pass() {
        for address in [
            "bob%evil.com@ours.fr",
            "evil.com!bob@ours.fr",
            "\"bob@evil.com\"@ours.fr",
            "\"bob%evil\"@ours.fr",
        ] {
            assert_eq!(
                check_routing(address).map_err(|r| r.reason),
                Err("routing_address"),
                "{address}"
            );
        }
        for address in ["bob@ours.fr", "\"john doe\"@ours.fr", "a.b+c@ours.fr", ""] {
            assert!(check_routing(address).is_ok(), "{address}");
        }
    }

    #[test]
    fn recipients_outside_our_domains_are_relay_attempts() {
        let ours = vec!["gateway.test.mssante.fr".to_string()];
        assert!(check_recipient("a@gateway.test.mssante.fr", &ours).is_ok());
        assert!(check_recipient("a@GATEWAY.test.mssante.fr.", &ours).is_ok());
        let r = check_recipient("a@elsewhere.mssante.fr", &ours).unwrap_err();
        assert_eq!(r.reason, "relay_denied");
        assert_eq!(r.reply.code, 550);
        assert_eq!(
            check_recipient("postmaster", &ours).unwrap_err().reason,
            "recipient_syntax"
        );
    }

    fn identity(cn: &str) -> PeerIdentity {
        PeerIdentity {
            subject_dn: format!("CN={cn}"),
            subject: crate::trust::dn::SubjectDn::parse(&format!("CN={cn}")).unwrap(),
            cn: Some(cn.into()),
            dns_names: vec![],
            issuer_dn: String::new(),
            serial_hex: String::new(),
            not_after: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn fcrdns_confirms_the_cn_or_refuses_per_mode() {
        let id = identity("smtp.peer-a.test.mssante.fr");
        let good = ReverseDns::Names(vec![
            "other.example".into(),
            "smtp.peer-a.test.mssante.fr".into(),
        ]);
        let bad = ReverseDns::Names(vec!["dsl-1-2-3-4.isp.example".into()]);
        let none = ReverseDns::Names(vec![]);
        let down = ReverseDns::Unavailable("timeout".into());
        assert_eq!(check_fcrdns(FcrdnsCheck::Enforce, &good, &id), Ok(None));
        let r = check_fcrdns(FcrdnsCheck::Enforce, &bad, &id).unwrap_err();
        assert_eq!((r.reply.code, r.reason), (550, "fcrdns_mismatch"));
        assert!(check_fcrdns(FcrdnsCheck::Enforce, &none, &id).is_err());
        let r = check_fcrdns(FcrdnsCheck::Enforce, &down, &id).unwrap_err();
        assert_eq!((r.reply.code, r.reason), (451, "fcrdns_unavailable"));
        assert_eq!(
            check_fcrdns(FcrdnsCheck::Log, &bad, &id),
            Ok(Some("fcrdns_mismatch"))
        );
        assert_eq!(check_fcrdns(FcrdnsCheck::Off, &bad, &id), Ok(None));
    }

    #[test]
    fn plaintext_sender_is_told_to_starttls() {
        let r = check_peer_certificate(&None).unwrap_err();
        assert_eq!((r.reply.code, r.reason), (530, "tls_required"));
    }
}
