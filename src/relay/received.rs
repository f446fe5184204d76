//! The one header the gateway adds to every message it relays.

use std::net::SocketAddr;

use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::OffsetDateTime;

use crate::spool::StoredMessage;
use crate::trust::dn::SubjectDn;

/// The one header we add: where the message came from (EHLO name, IP, TLS, the peer
/// certificate's CN), who took it, its queue id and when.
pub fn received_header(message: &StoredMessage, hostname: &str) -> String {
    let env = &message.envelope;
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_control() && *c != '(' && *c != ')' && *c != ';')
            .collect()
    };
    let ip = env
        .peer_addr
        .parse::<SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| clean(&env.peer_addr));
    let helo = clean(&env.helo);
    let mut h = format!("Received: from {helo} ({helo} [{ip}])\r\n");
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
    let date = OffsetDateTime::parse(&env.received_at, &Rfc3339)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .format(&Rfc2822)
        .unwrap_or_default();
    h.push_str(&format!(
        "\tby {hostname} (mssante-gateway) with {with} id {};\r\n\t{date}\r\n",
        message.id
    ));
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
        };
        let h = received_header(&m, "smtp.gateway.test.mssante.fr");
        assert_eq!(
            h,
            "Received: from smtp.peer-a.test.mssante.fr (smtp.peer-a.test.mssante.fr [192.0.2.7])\r\n\
             \t(using TLSv1_3 with cipher TLS13_AES_256_GCM_SHA384; peer CN=smtp.peer-a.test.mssante.fr)\r\n\
             \tby smtp.gateway.test.mssante.fr (mssante-gateway) with ESMTPS id 0000000000100000001;\r\n\
             \tFri, 02 Jan 2026 03:04:05 +0000\r\n"
        );
    }
}
