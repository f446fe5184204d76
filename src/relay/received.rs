//! The one header the gateway adds to every message it relays.

use std::net::SocketAddr;

use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::OffsetDateTime;

use crate::spool::StoredMessage;
use crate::trust::dn::SubjectDn;

/// The one header we add, in the form of RFC 5321 §4.4: `from` the EHLO name with the
/// address (and the reverse-DNS name when one was looked up and confirmed), a comment
/// with the TLS version and cipher and the peer certificate's CN, `by` us `with ESMTPS`,
/// our queue `id`, `for` the recipient when there is only one, and the acceptance date.
pub fn received_header(message: &StoredMessage, hostname: &str) -> String {
    let env = &message.envelope;
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_control() && !matches!(c, '(' | ')' | ';' | '<' | '>' | '"'))
            .collect()
    };
    let ip = env
        .peer_addr
        .parse::<SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| clean(&env.peer_addr));
    let helo = clean(&env.helo);
    // The parenthesised slot holds a reverse-DNS name only when one was confirmed.
    let tcp_info = match env.peer_ptr.as_deref() {
        Some(ptr) => format!("{} [{ip}]", clean(ptr)),
        None => format!("[{ip}]"),
    };
    let mut h = format!("Received: from {helo} ({tcp_info})\r\n");
    if let Some(tls) = &env.tls {
        let version = clean(&tls.version);
        let cipher = clean(&tls.cipher);
        // Messages spooled before the CN was recorded: read it off the DN with the DN
        // parser.
        let cn = env
            .peer_cn
            .clone()
            .or_else(|| {
                let dn = env.peer_dn.as_deref()?;
                SubjectDn::parse(dn).ok()?.cn
            })
            .map(|cn| format!("; peer CN={}", clean(&cn)))
            .unwrap_or_default();
        h.push_str(&format!("\t(using {version} with cipher {cipher}{cn})\r\n"));
    }
    let with = if env.tls.is_some() { "ESMTPS" } else { "ESMTP" };
    h.push_str(&format!(
        "\tby {hostname} (mssante-gateway) with {with} id {}",
        message.id
    ));
    if let [only] = env.recipients.as_slice() {
        h.push_str(&format!("\r\n\tfor <{}>", clean(&only.address)));
    }
    let date = OffsetDateTime::parse(&env.received_at, &Rfc3339)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .format(&Rfc2822)
        .unwrap_or_default();
    h.push_str(&format!(";\r\n\t{date}\r\n"));
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Envelope, Recipient};

    #[test]
    fn received_header_names_peer_tls_cn_and_queue_id() {
        let m = StoredMessage {
            id: "0000000000100000001".into(),
            envelope: Envelope {
                direction: Default::default(),
                received_at: "2026-01-02T03:04:05Z".into(),
                peer_addr: "192.0.2.7:40000".into(),
                helo: "smtp.peer-a.test.mssante.fr".into(),
                peer_dn: Some("CN=smtp.peer-a.test.mssante.fr,OU=123,O=PEER A,C=FR".into()),
                peer_cn: Some("smtp.peer-a.test.mssante.fr".into()),
                peer_ptr: None,
                tls: Some(crate::spool::SessionTls {
                    version: "TLSv1_3".into(),
                    cipher: "TLS13_AES_256_GCM_SHA384".into(),
                }),
                mail_from: "a@peer-a.test.mssante.fr".into(),
                envid: None,
                ret_full: None,
                body_8bitmime: false,
                smtputf8: false,
                recipients: vec![Recipient {
                    address: "b@gateway.test.mssante.fr".into(),
                    notify: 0,
                    orcpt: None,
                }],
            },
            body: Vec::new(),
            rest: None,
        };
        let h = received_header(&m, "smtp.gateway.test.mssante.fr");
        assert_eq!(
            h,
            "Received: from smtp.peer-a.test.mssante.fr ([192.0.2.7])\r\n\
             \t(using TLSv1_3 with cipher TLS13_AES_256_GCM_SHA384; peer CN=smtp.peer-a.test.mssante.fr)\r\n\
             \tby smtp.gateway.test.mssante.fr (mssante-gateway) with ESMTPS id 0000000000100000001\r\n\
             \tfor <b@gateway.test.mssante.fr>;\r\n\
             \tFri, 02 Jan 2026 03:04:05 +0000\r\n"
        );
        // A confirmed reverse-DNS name goes in the parenthesised slot; two recipients,
        // no `for`.
        let mut m = m;
        m.envelope.peer_ptr = Some("mx1.peer-a.example".into());
        m.envelope.recipients.push(m.envelope.recipients[0].clone());
        let h = received_header(&m, "smtp.gateway.test.mssante.fr");
        assert!(
            h.starts_with(
                "Received: from smtp.peer-a.test.mssante.fr (mx1.peer-a.example [192.0.2.7])\r\n"
            ),
            "{h}"
        );
        assert!(!h.contains("for <"), "{h}");
    }
}
