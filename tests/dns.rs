//! MX resolution for outbound delivery, against a real DNS server on loopback.

#[path = "common/dns_server.rs"]
mod dns_server;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use dns_server::{DnsServer, RecordSpec};
use hickory_resolver::proto::rr::RecordType;
use mssante_gateway::dns::{DnsError, DnsSettings, MxHost, Resolver};

fn resolver(server: &DnsServer) -> Resolver {
    resolver_with(server, Duration::from_secs(2), 1)
}

fn resolver_with(server: &DnsServer, timeout: Duration, attempts: usize) -> Resolver {
    let settings = DnsSettings {
        name_servers: vec![server.addr],
        timeout,
        attempts,
        cache_size: 64,
    };
    assert!(settings.validate().is_empty());
    Resolver::new(&settings).expect("resolver")
}

fn exchanges(hosts: &[MxHost]) -> Vec<(&str, u16)> {
    hosts
        .iter()
        .map(|h| (h.exchange.as_str(), h.preference))
        .collect()
}

#[tokio::test]
async fn mx_hosts_are_tried_by_preference() {
    let dns = DnsServer::start(&[
        ("peer-b.test", RecordSpec::mx(20, "backup.peer-b.test")),
        ("peer-b.test", RecordSpec::mx(10, "MX1.peer-b.test.")),
    ]);
    let hosts = resolver(&dns).mx_hosts("peer-b.test").await.unwrap();
    assert_eq!(
        exchanges(&hosts),
        [("mx1.peer-b.test", 10), ("backup.peer-b.test", 20)]
    );
    assert!(hosts.iter().all(|h| !h.implicit));
}

#[tokio::test]
async fn equal_preferences_are_all_returned_in_varying_order() {
    let dns = DnsServer::start(&[
        ("peer-c.test", RecordSpec::mx(10, "a.peer-c.test")),
        ("peer-c.test", RecordSpec::mx(10, "b.peer-c.test")),
        ("peer-c.test", RecordSpec::mx(30, "z.peer-c.test")),
    ]);
    let resolver = resolver(&dns);
    let mut firsts = HashSet::new();
    for _ in 0..64 {
        let hosts = resolver.mx_hosts("peer-c.test").await.unwrap();
        let mut equal: Vec<&str> = hosts[..2].iter().map(|h| h.exchange.as_str()).collect();
        firsts.insert(equal[0].to_string());
        equal.sort();
        assert_eq!(equal, ["a.peer-c.test", "b.peer-c.test"]);
        assert_eq!(exchanges(&hosts[2..]), [("z.peer-c.test", 30)]);
    }
    assert_eq!(
        firsts.len(),
        2,
        "both hosts of preference 10 come first sometimes"
    );
}

#[tokio::test]
async fn a_domain_without_mx_is_its_own_mail_host() {
    let dns = DnsServer::start(&[("peer-d.test", RecordSpec::A(Ipv4Addr::new(127, 0, 0, 1)))]);
    let hosts = resolver(&dns).mx_hosts("peer-d.test").await.unwrap();
    assert_eq!(
        hosts,
        [MxHost {
            exchange: "peer-d.test".into(),
            preference: 0,
            implicit: true,
        }]
    );
}

#[tokio::test]
async fn a_domain_without_mx_nor_address_has_no_mail_host() {
    let dns = DnsServer::start(&[
        ("peer-e.test", RecordSpec::Txt("v=spf1 -all".into())),
        ("mx.peer-e.test", RecordSpec::Txt("no address here".into())),
    ]);
    let resolver = resolver(&dns);
    let err = resolver.mx_hosts("peer-e.test").await.unwrap_err();
    assert_eq!(
        err,
        DnsError::NoMailHost {
            domain: "peer-e.test".into()
        }
    );
    assert!(err.is_permanent());
    assert_eq!(err.reason(), "dns_no_mail_host");

    let err = resolver.addresses("mx.peer-e.test").await.unwrap_err();
    assert_eq!(err.reason(), "dns_no_address");
    assert!(err.is_permanent());
}

#[tokio::test]
async fn a_null_mx_refuses_mail_permanently() {
    let dns = DnsServer::start(&[
        ("no-mail.test", RecordSpec::NullMx),
        ("no-mail.test", RecordSpec::A(Ipv4Addr::new(127, 0, 0, 1))),
    ]);
    let err = resolver(&dns).mx_hosts("no-mail.test").await.unwrap_err();
    assert_eq!(
        err,
        DnsError::NullMx {
            domain: "no-mail.test".into()
        }
    );
    assert!(err.is_permanent());
    assert_eq!(err.reason(), "dns_null_mx");
}

#[tokio::test]
async fn a_null_mx_mixed_with_real_hosts_leaves_the_real_hosts() {
    let dns = DnsServer::start(&[
        ("mixed.test", RecordSpec::NullMx),
        ("mixed.test", RecordSpec::mx(10, "mx.mixed.test")),
    ]);
    let hosts = resolver(&dns).mx_hosts("mixed.test").await.unwrap();
    assert_eq!(exchanges(&hosts), [("mx.mixed.test", 10)]);
}

#[tokio::test]
async fn an_unknown_domain_is_a_permanent_failure() {
    let dns = DnsServer::start(&[("peer-b.test", RecordSpec::mx(10, "mx.peer-b.test"))]);
    let err = resolver(&dns).mx_hosts("nowhere.test").await.unwrap_err();
    assert_eq!(
        err,
        DnsError::NoSuchDomain {
            name: "nowhere.test".into()
        }
    );
    assert!(err.is_permanent());
    assert_eq!(err.reason(), "dns_nxdomain");
}

#[tokio::test]
async fn a_silent_name_server_is_a_temporary_failure_within_the_timeout() {
    let dns = DnsServer::silent();
    // Two tries of 200 ms each: the lookup gives up after about 400 ms.
    let resolver = resolver_with(&dns, Duration::from_millis(200), 2);
    let started = Instant::now();
    let err = resolver.mx_hosts("peer-b.test").await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, DnsError::Temporary { .. }), "{err:?}");
    assert!(!err.is_permanent());
    assert_eq!(err.reason(), "dns_temporary");
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(2),
        "took {elapsed:?}"
    );
    assert_eq!(
        dns.query_count("peer-b.test", RecordType::MX),
        2,
        "sent twice"
    );
}

#[tokio::test]
async fn servfail_is_a_temporary_failure() {
    let dns = DnsServer::start(&[("broken.test", RecordSpec::ServFail)]);
    let resolver = resolver(&dns);
    let err = resolver.mx_hosts("broken.test").await.unwrap_err();
    assert_eq!(err.reason(), "dns_temporary", "{err:?}");
    let err = resolver.addresses("broken.test").await.unwrap_err();
    assert_eq!(err.reason(), "dns_temporary", "{err:?}");
}

#[tokio::test]
async fn addresses_gives_ipv4_then_ipv6() {
    let dns = DnsServer::start(&[
        ("mx.peer-b.test", RecordSpec::Aaaa(Ipv6Addr::LOCALHOST)),
        ("mx.peer-b.test", RecordSpec::A(Ipv4Addr::new(127, 0, 0, 1))),
        ("mx.peer-b.test", RecordSpec::A(Ipv4Addr::new(127, 0, 0, 2))),
        ("v6only.peer-b.test", RecordSpec::Aaaa(Ipv6Addr::LOCALHOST)),
    ]);
    let resolver = resolver(&dns);
    let addresses = resolver.addresses("mx.peer-b.test").await.unwrap();
    assert_eq!(
        addresses,
        [
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
    );
    let v6 = resolver.addresses("v6only.peer-b.test").await.unwrap();
    assert_eq!(v6, [IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    let err = resolver.addresses("gone.peer-b.test").await.unwrap_err();
    assert_eq!(err.reason(), "dns_nxdomain");
}

#[tokio::test]
async fn an_mx_behind_a_cname_is_followed() {
    let dns = DnsServer::start(&[
        ("alias.test", RecordSpec::Cname("real.test".into())),
        ("real.test", RecordSpec::mx(5, "mx.real.test")),
    ]);
    let hosts = resolver(&dns).mx_hosts("alias.test").await.unwrap();
    assert_eq!(exchanges(&hosts), [("mx.real.test", 5)]);
}

#[tokio::test]
async fn a_second_lookup_is_answered_from_the_cache() {
    let dns = DnsServer::start(&[
        ("peer-b.test", RecordSpec::mx(10, "mx.peer-b.test")),
        ("mx.peer-b.test", RecordSpec::A(Ipv4Addr::new(127, 0, 0, 1))),
    ]);
    let resolver = resolver(&dns);
    for _ in 0..3 {
        resolver.mx_hosts("peer-b.test").await.unwrap();
        resolver.addresses("mx.peer-b.test").await.unwrap();
        let err = resolver.mx_hosts("nowhere.test").await.unwrap_err();
        assert_eq!(err.reason(), "dns_nxdomain");
    }
    assert_eq!(dns.query_count("peer-b.test", RecordType::MX), 1);
    assert_eq!(dns.query_count("mx.peer-b.test", RecordType::A), 1);
    assert_eq!(dns.query_count("mx.peer-b.test", RecordType::AAAA), 1);
    assert_eq!(dns.query_count("nowhere.test", RecordType::MX), 1);
}

#[tokio::test]
async fn the_cache_forgets_an_answer_when_its_ttl_expires() {
    let dns =
        DnsServer::start_with_ttl(&[("peer-b.test", RecordSpec::mx(10, "mx.peer-b.test"))], 1);
    let resolver = resolver(&dns);
    resolver.mx_hosts("peer-b.test").await.unwrap();
    resolver.mx_hosts("peer-b.test").await.unwrap();
    assert_eq!(dns.query_count("peer-b.test", RecordType::MX), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    resolver.mx_hosts("peer-b.test").await.unwrap();
    assert_eq!(dns.query_count("peer-b.test", RecordType::MX), 2);
}

#[tokio::test]
async fn an_invalid_name_is_refused_without_a_query() {
    let dns = DnsServer::start(&[]);
    let err = resolver(&dns)
        .mx_hosts(&format!("{}.test", "a".repeat(64)))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "dns_invalid_name");
    assert!(dns.queries().is_empty());
}

/// The test server also answers over TCP (RFC 1035 §4.2.2), which resolvers use for
/// truncated answers.
#[tokio::test]
async fn the_test_server_answers_over_tcp() {
    use hickory_resolver::proto::op::{Message, Query};
    use hickory_resolver::proto::rr::{Name, RData};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dns = DnsServer::start(&[("peer-b.test", RecordSpec::mx(10, "mx.peer-b.test"))]);
    let mut query = Message::query();
    query.add_query(Query::query(
        Name::from_ascii("peer-b.test.").unwrap(),
        RecordType::MX,
    ));
    let bytes = query.to_vec().unwrap();
    let mut stream = tokio::net::TcpStream::connect(dns.addr).await.unwrap();
    stream.write_u16(bytes.len() as u16).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await.unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, query.metadata.id);
    match &reply.answers[..] {
        [record] => match &record.data {
            RData::MX(mx) => assert_eq!(mx.preference, 10),
            other => panic!("not an MX: {other:?}"),
        },
        other => panic!("expected one answer, got {other:?}"),
    }
    assert_eq!(dns.query_count("peer-b.test", RecordType::MX), 1);
}
