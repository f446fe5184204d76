//! Every accept/reject decision of the inbound path, as pure functions.
//!
//! A decision is `Ok(())` or a [`Refusal`] carrying the reply to send and a stable `reason`
//! label shared by logs and metrics. Permanent refusals are 5xx; refusals caused by our own
//! state are 4xx so that the peer tries again later.

use crate::smtp::{Enhanced, Reply};
use crate::trust::verify::{CertError, PeerIdentity};

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
        Some(Err(e)) => Err(Refusal::new(
            550,
            (5, 7, 1),
            format!("Client certificate refused: {e}"),
            e.client_reason(),
        )),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn plaintext_sender_is_told_to_starttls() {
        let r = check_peer_certificate(&None).unwrap_err();
        assert_eq!((r.reply.code, r.reason), (530, "tls_required"));
    }
}
