//! `probe`: a tester's view of a peer operator. Given an address of that operator, it
//! walks the path our outbound delivery takes, one step at a time, with a verdict and the
//! SMTP exchange of each step: what the liste blanche says of the domain; its MX records;
//! then for each MX in order until one works: the address, the TCP connection, the
//! greeting, EHLO, STARTTLS, the TLS handshake presenting our certificate, the server's
//! chain (`verify_chain` as a server), its CN against the MX host (`names_match`), its DN
//! against the list's entries for the domain; then MAIL and RCPT, and either RSET (would
//! the recipient be accepted?) or, with `--send`, a test message.
//!
//! The message is only sent when every check of the server passed: the gateway itself
//! would not deliver to a server failing them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{ServerName, UnixTime};
use serde::Serialize;
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;
use tokio::net::TcpStream;

use super::annexe1;
use super::identity_checks::Status;
use crate::client::{ClientError, Connection};
use crate::config::Config;
use crate::dns::{DnsSettings, Resolver};
use crate::policy::judge_server;
use crate::smtp::client::{data_payload, Capabilities};
use crate::smtp::Reply;
use crate::trust::tls::client_config;
use crate::whitelist::{refresh, store, Whitelist};

/// The subject of the test message.
pub const SUBJECT: &str = "Test mssante-gateway probe";

/// What to probe and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The recipient, at the peer operator.
    pub to: String,
    /// The sender; default `postmaster@<first local domain>`.
    pub from: Option<String>,
    /// Send a test message (otherwise RSET after RCPT).
    pub send: bool,
    /// Name servers replacing `dns.name_servers`; empty: the configuration's.
    pub nameservers: Vec<SocketAddr>,
    /// SMTP port of the MX hosts (25; another one for tests).
    pub port: u16,
    /// Longest wait for a TCP connection, a TLS handshake or a reply.
    pub timeout: Duration,
}

impl Options {
    /// Probing `to` on port 25 without sending.
    pub fn new(to: impl Into<String>) -> Options {
        Options {
            to: to.into(),
            from: None,
            send: false,
            nameservers: Vec::new(),
            port: 25,
            timeout: Duration::from_secs(30),
        }
    }
}

/// One step of the probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Stable name: `whitelist`, `mx`, `address`, `connect`, `greeting`, `ehlo`,
    /// `starttls`, `tls`, `chain`, `mx_cn`, `whitelist_dn`, `ehlo_tls`, `mail`, `rcpt`,
    /// `data` or `rset`, `quit`.
    pub name: String,
    /// The MX host the step is about, if any.
    pub host: Option<String>,
    /// The verdict.
    pub status: Status,
    /// What was found; for warn and fail, what to do.
    pub message: String,
    /// The SMTP lines exchanged (`C: ` ours, `S: ` the server's).
    pub transcript: Vec<String>,
}

/// The whole probe.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The address probed.
    pub to: String,
    /// Its domain.
    pub domain: String,
    /// The sender used.
    pub from: String,
    /// Whether a test message was to be sent.
    pub send: bool,
    /// The worst verdict.
    pub status: Status,
    /// Every step, in order.
    pub steps: Vec<Step>,
}

impl Report {
    /// 0 pass, 1 warnings, 2 failures.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            Status::Pass => 0,
            Status::Warn => 1,
            Status::Fail => 2,
        }
    }

    /// The steps whose name is `name`.
    pub fn steps_named(&self, name: &str) -> Vec<&Step> {
        self.steps.iter().filter(|s| s.name == name).collect()
    }

    /// One line per step, its SMTP lines indented below it, then the verdict.
    pub fn to_text(&self) -> String {
        let width = self.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
        let mut out = format!(
            "probe {} (domain {}) from {}\n",
            self.to, self.domain, self.from
        );
        for s in &self.steps {
            let host = s
                .host
                .as_deref()
                .map(|h| format!("[{h}] "))
                .unwrap_or_default();
            out.push_str(&format!(
                "{:<4}  {:<width$}  {host}{}\n",
                s.status.as_str().to_ascii_uppercase(),
                s.name,
                s.message
            ));
            for line in &s.transcript {
                out.push_str(&format!("          {line}\n"));
            }
        }
        let count = |st: Status| self.steps.iter().filter(|s| s.status == st).count();
        out.push_str(&format!(
            "verdict: {} ({} pass, {} warn, {} fail)\n",
            self.status.as_str(),
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail)
        ));
        out
    }
}

/// Collects steps.
struct Steps(Vec<Step>);

impl Steps {
    fn push(&mut self, name: &str, host: Option<&str>, status: Status, message: impl Into<String>) {
        self.0.push(Step {
            name: name.to_string(),
            host: host.map(str::to_string),
            status,
            message: message.into(),
            transcript: Vec::new(),
        });
    }

    fn push_smtp(
        &mut self,
        name: &str,
        host: &str,
        status: Status,
        message: impl Into<String>,
        transcript: Vec<String>,
    ) {
        self.push(name, Some(host), status, message);
        if let Some(last) = self.0.last_mut() {
            last.transcript = transcript;
        }
    }
}

/// Runs the probe.
pub async fn run(config: &Config, options: &Options) -> Report {
    let to = options
        .to
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let domain = to
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default();
    let from = options.from.clone().unwrap_or_else(|| {
        format!(
            "postmaster@{}",
            config.local_domains.first().map_or("", String::as_str)
        )
    });
    let mut steps = Steps(Vec::new());
    if domain.is_empty() || !to.contains('@') || to.starts_with('@') {
        steps.push(
            "address",
            None,
            Status::Fail,
            format!("\"{to}\" is not an address: write user@domain"),
        );
        return finish(to, &domain, &from, options.send, steps);
    }

    let list = whitelist_step(config, &domain, &mut steps);

    let mut dns = config.dns.clone();
    if !options.nameservers.is_empty() {
        dns.name_servers = options.nameservers.clone();
    }
    let Some((resolver, hosts)) = mx_step(&dns, &domain, &mut steps).await else {
        return finish(to, &domain, &from, options.send, steps);
    };

    let target = Target {
        config,
        options,
        domain: &domain,
        to,
        from: &from,
        list: list.as_ref(),
    };
    let mut worked = false;
    for host in &hosts {
        let before = steps.0.len();
        if probe_host(&target, &resolver, host, &mut steps).await {
            worked = true;
            // The hosts tried before did not work, but this one does: their failures
            // are warnings now.
            for s in &mut steps.0[..before] {
                if s.host.is_some() && s.status == Status::Fail {
                    s.status = Status::Warn;
                    s.message.push_str(" (another MX host answered)");
                }
            }
            break;
        }
    }
    if !worked {
        steps.push(
            "delivery",
            None,
            Status::Fail,
            format!(
                "no MX host of {domain} could be reached with TLS: mail to it would stay queued"
            ),
        );
    }
    finish(to, &domain, &from, options.send, steps)
}

fn finish(to: &str, domain: &str, from: &str, send: bool, steps: Steps) -> Report {
    let status = steps
        .0
        .iter()
        .map(|s| s.status)
        .max()
        .unwrap_or(Status::Pass);
    Report {
        to: to.to_string(),
        domain: domain.to_string(),
        from: from.to_string(),
        send,
        status,
        steps: steps.0,
    }
}

/// The list's entries for the domain: DNs and public contacts.
fn whitelist_step(config: &Config, domain: &str, steps: &mut Steps) -> Option<Whitelist> {
    let cache = &config.whitelist.cache;
    let loaded = match store::load(cache, config.whitelist.max_size) {
        Ok(Some(bytes)) => refresh::load(&bytes, &config.tls.trust, &config.whitelist)
            .map_err(|e| format!("{} refused: {e}", cache.display())),
        Ok(None) => Err(format!("no liste blanche at {}", cache.display())),
        Err(e) => Err(e.to_string()),
    };
    let list = match loaded {
        Ok(l) => l,
        Err(e) => {
            steps.push(
                "whitelist",
                None,
                Status::Fail,
                format!("{e}: the server's DN cannot be checked; run `doctor` to fix the list"),
            );
            return None;
        }
    };
    let entries = list.entries_for_domain(domain);
    if entries.is_empty() {
        steps.push(
            "whitelist",
            None,
            Status::Fail,
            format!("{domain} is not in the liste blanche (generated {}): the gateway refuses to send to it and the peer refuses our mail for it", list.generated().date()),
        );
    } else {
        let described: Vec<String> = entries
            .iter()
            .map(|e| {
                format!(
                    "DN {} (contacts: {} / {})",
                    e.dn_text.trim(),
                    e.responsable_contact.trim(),
                    e.support_contact.trim()
                )
            })
            .collect();
        steps.push(
            "whitelist",
            None,
            Status::Pass,
            format!(
                "{domain} listed {} time(s): {}",
                entries.len(),
                described.join("; ")
            ),
        );
    }
    Some(list)
}

async fn mx_step(
    dns: &DnsSettings,
    domain: &str,
    steps: &mut Steps,
) -> Option<(Resolver, Vec<String>)> {
    let resolver = match Resolver::new(dns) {
        Ok(r) => r,
        Err(e) => {
            steps.push(
                "mx",
                None,
                Status::Fail,
                format!("{e}; pass --nameserver IP"),
            );
            return None;
        }
    };
    match resolver.mx_hosts(domain).await {
        Ok(hosts) => {
            let shown: Vec<String> = hosts
                .iter()
                .map(|h| {
                    if h.implicit {
                        format!("{} (no MX record: the domain itself)", h.exchange)
                    } else {
                        format!("{} {}", h.preference, h.exchange)
                    }
                })
                .collect();
            let status = if hosts.iter().any(|h| h.implicit) {
                Status::Warn
            } else {
                Status::Pass
            };
            steps.push("mx", None, status, shown.join(", "));
            Some((resolver, hosts.into_iter().map(|h| h.exchange).collect()))
        }
        Err(e) => {
            let fix = if e.is_permanent() {
                "the peer must publish MX records pointing at its certificate's CN"
            } else {
                "check the name servers (dns.name_servers or --nameserver)"
            };
            steps.push(
                "mx",
                None,
                Status::Fail,
                format!("{e} [{}]: {fix}", e.reason()),
            );
            None
        }
    }
}

/// What every step of one probe needs.
struct Target<'a> {
    config: &'a Config,
    options: &'a Options,
    /// The recipient's domain.
    domain: &'a str,
    to: &'a str,
    from: &'a str,
    /// The liste blanche, when it could be loaded.
    list: Option<&'a Whitelist>,
}

/// Probes one MX host; true when it "worked" (a TLS session was established), after
/// which no other host is tried.
async fn probe_host(t: &Target<'_>, resolver: &Resolver, host: &str, steps: &mut Steps) -> bool {
    let Target {
        config,
        options,
        domain,
        list,
        ..
    } = *t;
    let h = Some(host);
    let addresses: Vec<IpAddr> = match resolver.addresses(host).await {
        Ok(a) => {
            steps.push(
                "address",
                h,
                Status::Pass,
                a.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            a
        }
        Err(e) => {
            steps.push("address", h, Status::Fail, format!("{e} [{}]", e.reason()));
            return false;
        }
    };
    let mut tcp = None;
    for ip in &addresses {
        let addr = SocketAddr::new(*ip, options.port);
        match tokio::time::timeout(options.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                steps.push("connect", h, Status::Pass, format!("connected to {addr}"));
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) => steps.push(
                "connect",
                h,
                Status::Fail,
                format!(
                    "{addr}: {e}: is a firewall in the way? is port {} open?",
                    options.port
                ),
            ),
            Err(_) => steps.push(
                "connect",
                h,
                Status::Fail,
                format!("{addr}: no answer within {:?}", options.timeout),
            ),
        }
    }
    let Some(tcp) = tcp else { return false };
    let _ = tcp.set_nodelay(true);
    let mut s = Connection::over(tcp, options.timeout);
    s.record();

    // Greeting, EHLO, STARTTLS.
    match s.read_reply().await {
        Ok(r) if r.code == 220 => {
            let t = s.take_transcript();
            steps.push_smtp("greeting", host, Status::Pass, r.to_string(), t);
        }
        Ok(r) => {
            let t = s.take_transcript();
            steps.push_smtp(
                "greeting",
                host,
                Status::Fail,
                format!("expected 220, got {}", r),
                t,
            );
            return false;
        }
        Err(e) => {
            let t = s.take_transcript();
            steps.push_smtp("greeting", host, Status::Fail, e.to_string(), t);
            return false;
        }
    }
    let ehlo = format!("EHLO {}", config.hostname);
    let extensions = match s.command(&ehlo).await {
        Ok(r) if r.code == 250 => {
            let ext = Capabilities::of(&r).extensions;
            let t = s.take_transcript();
            steps.push_smtp(
                "ehlo",
                host,
                Status::Pass,
                format!("extensions: {}", ext.join(", ")),
                t,
            );
            Capabilities::of(&r)
        }
        Ok(r) => {
            let t = s.take_transcript();
            steps.push_smtp(
                "ehlo",
                host,
                Status::Fail,
                format!("EHLO refused: {}", r),
                t,
            );
            return false;
        }
        Err(e) => {
            let t = s.take_transcript();
            steps.push_smtp("ehlo", host, Status::Fail, e.to_string(), t);
            return false;
        }
    };
    if !extensions.starttls {
        steps.push(
            "starttls",
            h,
            Status::Fail,
            "STARTTLS not offered: MSSanté mail is only exchanged over TLS; the gateway would not send to this host",
        );
        let _ = s.command("QUIT").await;
        return false;
    }
    match s.command("STARTTLS").await {
        Ok(r) if r.code == 220 => {
            let t = s.take_transcript();
            steps.push_smtp("starttls", host, Status::Pass, "offered and accepted", t);
        }
        Ok(r) => {
            let t = s.take_transcript();
            steps.push_smtp("starttls", host, Status::Fail, format!("refused: {}", r), t);
            return false;
        }
        Err(e) => {
            let t = s.take_transcript();
            steps.push_smtp("starttls", host, Status::Fail, e.to_string(), t);
            return false;
        }
    }

    // The TLS handshake with our certificate.
    let tls_config = match client_config(&config.tls.identity, config.tls.versions) {
        Ok(c) => c,
        Err(e) => {
            steps.push(
                "tls",
                h,
                Status::Fail,
                format!("our TLS configuration: {e}"),
            );
            return false;
        }
    };
    let Ok(name) = ServerName::try_from(host.to_string()) else {
        steps.push(
            "tls",
            h,
            Status::Fail,
            format!("\"{host}\" is not a valid TLS server name"),
        );
        return false;
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls_config));
    match s.upgrade(&connector, name).await {
        Ok(()) => {}
        Err(ClientError::Timeout(_)) => {
            steps.push(
                "tls",
                h,
                Status::Fail,
                format!("handshake not done within {:?}", options.timeout),
            );
            return false;
        }
        Err(e) => {
            steps.push(
                "tls",
                h,
                Status::Fail,
                format!(
                    "{e}: the server may refuse our certificate or our TLS versions ({:?})",
                    config.tls.versions
                ),
            );
            return false;
        }
    }
    let tls = s.tls.map(|t| t.to_string()).unwrap_or_default();
    let ours = config.tls.identity.info();
    steps.push(
        "tls",
        h,
        Status::Pass,
        format!(
            "{tls}, presenting our certificate {}",
            annexe1::form_dn(&ours.subject)
        ),
    );

    // The server's certificate: the same judgement outbound delivery makes.
    let judged = judge_server(
        &s.peer_certificates,
        host,
        domain,
        &config.tls.trust,
        list,
        UnixTime::now(),
    );
    let mut trusted = true;
    let identity = match &judged.chain {
        Ok(id) => {
            steps.push(
                "chain",
                h,
                Status::Pass,
                format!(
                    "{} chains to the {} espace's anchors as a TLS server (issuer {}, valid until {})",
                    id.subject_dn,
                    config.espace.as_str(),
                    id.issuer_dn,
                    id.not_after.date()
                ),
            );
            Some(id)
        }
        Err(e) => {
            trusted = false;
            steps.push(
                "chain",
                h,
                Status::Fail,
                format!("{e} [{}]", e.server_reason()),
            );
            None
        }
    };
    match identity {
        Some(id) if judged.names_host => steps.push(
            "mx_cn",
            h,
            Status::Pass,
            format!(
                "the certificate names the MX host {host} (CN {})",
                id.cn.as_deref().unwrap_or("")
            ),
        ),
        Some(id) => {
            trusted = false;
            steps.push(
                "mx_cn",
                h,
                Status::Fail,
                format!(
                    "the certificate's CN {} (SAN {}) is not the MX host {host} (names_match): the MX record must point at the name in the certificate, or the peer needs a certificate for {host}",
                    id.cn.as_deref().unwrap_or("(none)"),
                    if id.dns_names.is_empty() { "none".to_string() } else { id.dns_names.join(", ") }
                ),
            )
        }
        None => steps.push(
            "mx_cn",
            h,
            Status::Fail,
            "not checked: the chain was refused",
        ),
    }
    match (identity, judged.listed, list) {
        (Some(_), Some(true), _) => steps.push(
            "whitelist_dn",
            h,
            Status::Pass,
            format!("the server's DN is listed for {domain}"),
        ),
        (Some(id), Some(false), Some(list)) => {
            trusted = false;
            let listed: Vec<&str> = list
                .entries_for_domain(domain)
                .iter()
                .map(|e| e.dn_text.as_str())
                .collect();
            steps.push(
                "whitelist_dn",
                h,
                Status::Fail,
                format!(
                    "the server's DN {} is not listed for {domain} (listed: {}): the peer must declare it to ANS (Annexe 1)",
                    id.subject_dn,
                    if listed.is_empty() { "none".to_string() } else { listed.join(" ; ") }
                ),
            );
        }
        (Some(_), _, _) => {
            trusted = false;
            steps.push(
                "whitelist_dn",
                h,
                Status::Fail,
                "not checked: no liste blanche",
            );
        }
        (None, _, _) => steps.push(
            "whitelist_dn",
            h,
            Status::Fail,
            "not checked: the chain was refused",
        ),
    }

    // The SMTP transaction over TLS.
    match s.command(&ehlo).await {
        Ok(r) if r.code == 250 => {
            let ext = Capabilities::of(&r).extensions;
            let t = s.take_transcript();
            steps.push_smtp(
                "ehlo_tls",
                host,
                Status::Pass,
                format!("extensions: {}", ext.join(", ")),
                t,
            );
        }
        Ok(r) => {
            let t = s.take_transcript();
            steps.push_smtp(
                "ehlo_tls",
                host,
                Status::Fail,
                format!("EHLO refused after TLS: {}", r),
                t,
            );
            return true;
        }
        Err(e) => {
            let t = s.take_transcript();
            steps.push_smtp("ehlo_tls", host, Status::Fail, e.to_string(), t);
            return true;
        }
    }
    transaction(t, &mut s, host, trusted, steps).await;
    true
}

/// MAIL, RCPT, then DATA (with `--send`, when the server was `trusted`) or RSET, then
/// QUIT.
async fn transaction(
    t: &Target<'_>,
    s: &mut Connection,
    host: &str,
    trusted: bool,
    steps: &mut Steps,
) {
    let (to, from) = (t.to, t.from);
    let send_asked = t.options.send;
    let send = send_asked && trusted;
    let verdict = |r: &Reply| match r.code {
        200..=299 => Status::Pass,
        400..=499 => Status::Warn,
        _ => Status::Fail,
    };
    let mail = match s.command(&format!("MAIL FROM:<{from}>")).await {
        Ok(r) => {
            let st = verdict(&r);
            let t = s.take_transcript();
            let msg = if st == Status::Pass {
                format!("sender {from} accepted")
            } else {
                format!(
                    "sender {from} refused: {}: is our domain listed with our DN? (run `doctor`)",
                    r
                )
            };
            steps.push_smtp("mail", host, st, msg, t);
            st == Status::Pass
        }
        Err(e) => {
            let t = s.take_transcript();
            steps.push_smtp("mail", host, Status::Fail, e.to_string(), t);
            return;
        }
    };
    let rcpt = if mail {
        match s.command(&format!("RCPT TO:<{to}>")).await {
            Ok(r) => {
                let st = verdict(&r);
                let t = s.take_transcript();
                let msg = if st == Status::Pass {
                    format!("recipient {to} accepted")
                } else {
                    format!("recipient {to} refused: {}", r)
                };
                steps.push_smtp("rcpt", host, st, msg, t);
                st == Status::Pass
            }
            Err(e) => {
                let t = s.take_transcript();
                steps.push_smtp("rcpt", host, Status::Fail, e.to_string(), t);
                return;
            }
        }
    } else {
        false
    };
    if send && rcpt {
        data(t, s, host, steps).await;
    } else {
        let why = if send_asked && !send {
            "no test message sent: the server failed the checks above, and the gateway would not send to it"
        } else if send_asked {
            "no test message sent: the transaction was refused"
        } else {
            "transaction reset without sending (add --send to send a test message)"
        };
        let st = if send_asked {
            Status::Fail
        } else {
            Status::Pass
        };
        match s.command("RSET").await {
            Ok(_) => {
                let t = s.take_transcript();
                steps.push_smtp("rset", host, st, why, t);
            }
            Err(e) => {
                let t = s.take_transcript();
                steps.push_smtp("rset", host, Status::Warn, e.to_string(), t);
                return;
            }
        }
    }
    let quit = s.command("QUIT").await;
    let t = s.take_transcript();
    match quit {
        Ok(r) if r.code == 221 => steps.push_smtp("quit", host, Status::Pass, r.to_string(), t),
        Ok(r) => steps.push_smtp(
            "quit",
            host,
            Status::Warn,
            format!("expected 221, got {}", r),
            t,
        ),
        Err(e) => steps.push_smtp("quit", host, Status::Warn, e.to_string(), t),
    }
}

async fn data(t: &Target<'_>, s: &mut Connection, host: &str, steps: &mut Steps) {
    let (to, from, config) = (t.to, t.from, t.config);
    match s.command("DATA").await {
        Ok(r) if r.code == 354 => {}
        Ok(r) => {
            let t = s.take_transcript();
            steps.push_smtp(
                "data",
                host,
                Status::Fail,
                format!("DATA refused: {}", r),
                t,
            );
            return;
        }
        Err(e) => {
            let t = s.take_transcript();
            steps.push_smtp("data", host, Status::Fail, e.to_string(), t);
            return;
        }
    }
    let now = OffsetDateTime::now_utc();
    let message_id = format!("<{:016x}.probe@{}>", rand::random::<u64>(), config.hostname);
    let message = test_message(from, to, &message_id, &config.hostname, now);
    let wire = data_payload(&[message.as_bytes()]);
    s.note(format!(
        "C: <test message, {} bytes, Message-ID {message_id}>",
        message.len()
    ));
    s.note("C: .");
    if let Err(e) = s.write(&[&wire]).await {
        let t = s.take_transcript();
        steps.push_smtp(
            "data",
            host,
            Status::Fail,
            format!("connection lost: {e}"),
            t,
        );
        return;
    }
    let reply = s.read_reply().await;
    let t = s.take_transcript();
    match reply {
        Ok(r) if (200..300).contains(&r.code) => steps.push_smtp(
            "data",
            host,
            Status::Pass,
            format!("test message {message_id} accepted: {}", r),
            t,
        ),
        Ok(r) if (400..500).contains(&r.code) => steps.push_smtp(
            "data",
            host,
            Status::Warn,
            format!("test message deferred: {}", r),
            t,
        ),
        Ok(r) => steps.push_smtp(
            "data",
            host,
            Status::Fail,
            format!("test message refused: {}", r),
            t,
        ),
        Err(e) => steps.push_smtp("data", host, Status::Fail, e.to_string(), t),
    }
}

/// The test message: plain ASCII, CRLF line ends.
pub fn test_message(
    from: &str,
    to: &str,
    message_id: &str,
    hostname: &str,
    now: OffsetDateTime,
) -> String {
    let date = now.format(&Rfc2822).unwrap_or_default();
    format!(
        "From: <{from}>\r\n\
         To: <{to}>\r\n\
         Subject: {SUBJECT}\r\n\
         Date: {date}\r\n\
         Message-ID: {message_id}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         Message de test envoye par mssante-gateway probe depuis {hostname}.\r\n\
         Il verifie la livraison vers cette adresse; il ne demande aucune action.\r\n\
         \r\n\
         Test message sent by mssante-gateway probe from {hostname}.\r\n\
         It checks delivery to this address; no action is needed.\r\n"
    )
}
