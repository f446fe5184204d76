//! DNS for outbound delivery: which hosts receive a domain's mail (MX), and their addresses.
//!
//! Built on hickory-resolver with the tokio runtime and plain UDP/TCP transports only (no
//! DNS over TLS or HTTPS, so no second TLS stack next to ours). [`Resolver::mx_hosts`]
//! applies RFC 5321 §5.1 and RFC 7505:
//!
//! - MX records are ordered by preference; hosts of equal preference are shuffled on every
//!   call, so that the load spreads over them as the domain's owner intends;
//! - a domain without MX records but with an address (A or AAAA) is its own mail host, with
//!   preference 0 (the "implicit MX");
//! - a "null MX" (`0 .`) says the domain accepts no mail: [`DnsError::NullMx`], permanent.
//!
//! Every failure is a [`DnsError`] that tells whether it is permanent (bounce the message)
//! or temporary (retry later), and carries a stable [`DnsError::reason`] label for logs and
//! metrics.
//!
//! # Cache
//! hickory's own response cache is used: it keeps each answer, positive or negative, until
//! its TTL expires (for a negative answer, the SOA's minimum in the authority section), and
//! holds at most `cache_size` responses, dropping the least recently used. Nothing is kept
//! past its TTL and nothing is cached for longer than the zone's owner asked.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use rand::seq::SliceRandom;
use serde::Deserialize;

/// How the resolver reaches DNS: the `[dns]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSettings {
    /// Recursive name servers to ask, as `address:port`. Empty: those of the system's
    /// `/etc/resolv.conf` (and `/etc/hosts` is consulted first, as the system resolver
    /// would). Set it to reach a dedicated resolver, or a test server on loopback.
    pub name_servers: Vec<SocketAddr>,
    /// How long one query waits for an answer before it is sent again or given up: a
    /// silent name server must not hold a delivery worker for long.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub timeout: Duration,
    /// How many times a query is sent before the lookup is reported as temporary (timeouts,
    /// SERVFAIL), the first time included, as `attempts` in resolv.conf: a silent name
    /// server holds a lookup for about `timeout × attempts`.
    pub attempts: usize,
    /// Most responses kept in the cache; each is dropped when its TTL expires anyway.
    pub cache_size: u64,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            name_servers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
            cache_size: 1024,
        }
    }
}

impl DnsSettings {
    /// The problems of these settings, as (key inside `[dns]`, what is wrong and what is
    /// expected); empty when they are usable. Serde already refused unparsable values.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.timeout.is_zero() {
            problems.push((
                "timeout",
                "must be greater than 0, such as \"5s\"".to_string(),
            ));
        } else if self.timeout > Duration::from_secs(60) {
            problems.push((
                "timeout",
                "must be at most 60s: a delivery worker waits this long per query".to_string(),
            ));
        }
        if self.attempts == 0 {
            problems.push(("attempts", "must be at least 1 (2 is usual)".to_string()));
        }
        if self.cache_size == 0 {
            problems.push((
                "cache_size",
                "must be greater than 0: the cache spares the name servers one lookup per message"
                    .to_string(),
            ));
        }
        for ns in &self.name_servers {
            if ns.port() == 0 {
                problems.push((
                    "name_servers",
                    format!("\"{ns}\" has port 0: write the port, usually 53"),
                ));
            }
        }
        problems
    }
}

/// One host that receives mail for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// The host name, lower case, without the final dot; look up its addresses with
    /// [`Resolver::addresses`]. The outbound relay also checks the peer certificate's CN
    /// against it.
    pub exchange: String,
    /// Lower is tried first.
    pub preference: u16,
    /// True when the domain has no MX record and is its own mail host (RFC 5321 §5.1).
    pub implicit: bool,
}

/// Why a lookup gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The domain does not exist (NXDOMAIN): the address is wrong, the mail is refused.
    #[error("{name}: no such domain (NXDOMAIN)")]
    NoSuchDomain {
        /// The name looked up.
        name: String,
    },
    /// The domain publishes a null MX (RFC 7505): it accepts no mail at all.
    #[error("{domain}: the domain accepts no mail (null MX, RFC 7505)")]
    NullMx {
        /// The domain.
        domain: String,
    },
    /// The domain exists but has neither MX nor address records: nowhere to deliver.
    #[error("{domain}: no MX record and no address (RFC 5321 §5.1)")]
    NoMailHost {
        /// The domain.
        domain: String,
    },
    /// The host exists but has no A or AAAA record.
    #[error("{host}: no A or AAAA record")]
    NoAddress {
        /// The host name.
        host: String,
    },
    /// The name cannot be a domain name (bad characters, label or name too long).
    #[error("\"{name}\" is not a valid domain name: {detail}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        detail: String,
    },
    /// No answer could be had now: timeout, SERVFAIL, refused, network error. Retry later.
    #[error("{name}: temporary DNS failure: {detail}")]
    Temporary {
        /// The name looked up.
        name: String,
        /// What happened, for the logs.
        detail: String,
    },
}

impl DnsError {
    /// True when retrying cannot help: the message is to be bounced, not deferred.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DnsError::Temporary { .. })
    }

    /// A stable label for logs and the `reason` label of metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DnsError::NoSuchDomain { .. } => "dns_nxdomain",
            DnsError::NullMx { .. } => "dns_null_mx",
            DnsError::NoMailHost { .. } => "dns_no_mail_host",
            DnsError::NoAddress { .. } => "dns_no_address",
            DnsError::InvalidName { .. } => "dns_invalid_name",
            DnsError::Temporary { .. } => "dns_temporary",
        }
    }
}

/// The resolver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// No name server was configured and the system's configuration could not be read.
    #[error(
        "cannot read the system's DNS configuration (/etc/resolv.conf): {0}; set dns.name_servers"
    )]
    SystemConfig(String),
    /// hickory refused the configuration.
    #[error("cannot build the DNS resolver: {0}")]
    Build(String),
}

/// Resolves MX hosts and addresses for outbound delivery. Cheap to clone; clones share the
/// cache and the connections.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// What one query of one record type gave.
enum Answer<T> {
    Records(Vec<T>),
    /// The name exists, without records of this type (NOERROR, NODATA).
    NoData,
    /// The name does not exist.
    NxDomain,
}

impl Resolver {
    /// A resolver asking `settings.name_servers` (UDP, then TCP for truncated answers), or
    /// the system's name servers when that list is empty. It can be built outside a tokio
    /// runtime (while loading the configuration); lookups must run inside one.
    pub fn new(settings: &DnsSettings) -> Result<Self, SetupError> {
        let provider = TokioRuntimeProvider::default();
        let (config, mut opts) = if settings.name_servers.is_empty() {
            let (config, mut opts) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| SetupError::SystemConfig(e.to_string()))?;
            opts.use_hosts_file = ResolveHosts::Auto;
            (config, opts)
        } else {
            let servers = settings
                .name_servers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut opts = ResolverOpts::default();
            // Explicit name servers are the whole truth: a stray /etc/hosts entry must not
            // redirect a peer operator's mail.
            opts.use_hosts_file = ResolveHosts::Never;
            (ResolverConfig::from_name_servers(servers), opts)
        };
        opts.timeout = settings.timeout;
        // hickory counts the retries after the first query.
        opts.attempts = settings.attempts.saturating_sub(1);
        opts.cache_size = settings.cache_size;
        // Names are always looked up as given (fully qualified), never under a search domain.
        opts.ndots = 0;
        let mut builder = TokioResolver::builder_with_config(config, provider);
        *builder.options_mut() = opts;
        let inner = builder
            .build()
            .map_err(|e| SetupError::Build(e.to_string()))?;
        Ok(Self { inner })
    }

    /// The hosts that receive mail for `domain`, in the order to try them (RFC 5321 §5.1):
    /// by preference, equal preferences in random order; the domain itself when it has no
    /// MX but has an address.
    pub async fn mx_hosts(&self, domain: &str) -> Result<Vec<MxHost>, DnsError> {
        let name = fqdn(domain)?;
        let shown = display_name(&name);
        let records = match self.query(&name, RecordType::MX).await? {
            Answer::Records(r) => r,
            Answer::NxDomain => return Err(DnsError::NoSuchDomain { name: shown }),
            Answer::NoData => {
                return match self.addresses_of(&name).await {
                    Ok(_) => Ok(vec![MxHost {
                        exchange: shown,
                        preference: 0,
                        implicit: true,
                    }]),
                    Err(DnsError::NoAddress { .. }) => Err(DnsError::NoMailHost { domain: shown }),
                    Err(e) => Err(e),
                };
            }
        };
        let mut mx: Vec<(u16, Name)> = records
            .into_iter()
            .filter_map(|r| match r {
                RData::MX(mx) => Some((mx.preference, mx.exchange)),
                _ => None,
            })
            .collect();
        // RFC 7505 forbids mixing a null MX with others; if a zone does, the real hosts
        // still receive mail.
        // `query` returned MX records, so nothing left means they were all null MX.
        mx.retain(|(_, exchange)| !exchange.is_root());
        if mx.is_empty() {
            return Err(DnsError::NullMx { domain: shown });
        }
        let hosts = mx
            .into_iter()
            .map(|(preference, exchange)| MxHost {
                exchange: display_name(&exchange),
                preference,
                implicit: false,
            })
            .collect();
        Ok(order_by_preference(hosts, &mut rand::rng()))
    }

    /// The addresses of `host`: IPv4 (A) first, then IPv6 (AAAA), each in the order the
    /// name server gave. Both are asked in parallel.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let name = fqdn(host)?;
        self.addresses_of(&name).await
    }

    async fn addresses_of(&self, name: &Name) -> Result<Vec<IpAddr>, DnsError> {
        let (v4, v6) = tokio::join!(
            self.query(name, RecordType::A),
            self.query(name, RecordType::AAAA)
        );
        let mut addresses = Vec::new();
        let mut nxdomain = false;
        let mut temporary = None;
        for answer in [v4, v6] {
            match answer {
                Ok(Answer::Records(records)) => {
                    addresses.extend(records.into_iter().filter_map(|r| match r {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    }))
                }
                Ok(Answer::NoData) => {}
                Ok(Answer::NxDomain) => nxdomain = true,
                Err(e) => temporary = Some(e),
            }
        }
        // Some addresses are enough to deliver; otherwise a failure of either query means
        // the answer is not known yet, and only then is the absence permanent.
        if !addresses.is_empty() {
            return Ok(addresses);
        }
        if let Some(e) = temporary {
            return Err(e);
        }
        let host = display_name(name);
        if nxdomain {
            Err(DnsError::NoSuchDomain { name: host })
        } else {
            Err(DnsError::NoAddress { host })
        }
    }

    /// One query, its outcome sorted into what the caller acts on.
    /// The names the reverse zone gives for `ip` (PTR records), lower case, without the
    /// final dot; empty when there are none.
    pub async fn ptr_names(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let name = Name::from(ip);
        match self.query(&name, RecordType::PTR).await? {
            Answer::Records(records) => Ok(records
                .into_iter()
                .filter_map(|r| match r {
                    RData::PTR(ptr) => {
                        Some(ptr.0.to_ascii().trim_end_matches('.').to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()),
            Answer::NoData | Answer::NxDomain => Ok(Vec::new()),
        }
    }

    /// Forward-confirmed reverse DNS: the PTR names of `ip` whose own addresses include
    /// `ip` again. Only these names can be trusted to belong to the peer.
    pub async fn confirmed_names(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let mut confirmed = Vec::new();
        for name in self.ptr_names(ip).await? {
            match self.addresses(&name).await {
                Ok(addrs) if addrs.contains(&ip) => confirmed.push(name),
                Ok(_) | Err(DnsError::NoSuchDomain { .. }) | Err(DnsError::NoAddress { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(confirmed)
    }

    async fn query(&self, name: &Name, record_type: RecordType) -> Result<Answer<RData>, DnsError> {
        match self.inner.lookup(name.clone(), record_type).await {
            Ok(lookup) => {
                let records: Vec<RData> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == record_type)
                    .map(|r| r.data.clone())
                    .collect();
                if records.is_empty() {
                    Ok(Answer::NoData)
                } else {
                    Ok(Answer::Records(records))
                }
            }
            Err(e) => classify(name, e),
        }
    }
}

fn classify(name: &Name, e: NetError) -> Result<Answer<RData>, DnsError> {
    if e.is_nx_domain() {
        return Ok(Answer::NxDomain);
    }
    if let NetError::Dns(HickoryDnsError::NoRecordsFound(no)) = &e {
        if no.response_code == ResponseCode::NoError {
            return Ok(Answer::NoData);
        }
    }
    let detail = match &e {
        NetError::Timeout => "no answer within the timeout".to_string(),
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => {
            format!("the name server answered {code}")
        }
        other => other.to_string(),
    };
    Err(DnsError::Temporary {
        name: display_name(name),
        detail,
    })
}

/// `name` as an absolute domain name (IDNA names are converted to their ASCII form).
fn fqdn(name: &str) -> Result<Name, DnsError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed == "." {
        return Err(DnsError::InvalidName {
            name: name.to_string(),
            detail: "empty".into(),
        });
    }
    let mut parsed = Name::from_utf8(trimmed).map_err(|e| DnsError::InvalidName {
        name: name.to_string(),
        detail: e.to_string(),
    })?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// Lower case, ASCII, without the final dot: the form used in logs and compared to
/// certificate names.
fn display_name(name: &Name) -> String {
    let ascii = name.to_lowercase().to_ascii();
    ascii.trim_end_matches('.').to_string()
}

/// Sorts by preference and shuffles each run of equal preferences (RFC 5321 §5.1), keeping
/// only the first occurrence of a host listed twice.
fn order_by_preference<R: rand::Rng + ?Sized>(mut hosts: Vec<MxHost>, rng: &mut R) -> Vec<MxHost> {
    hosts.sort_by_key(|h| h.preference);
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|h| seen.insert(h.exchange.clone()));
    for run in hosts.chunk_by_mut(|a, b| a.preference == b.preference) {
        run.shuffle(rng);
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, preference: u16) -> MxHost {
        MxHost {
            exchange: name.into(),
            preference,
            implicit: false,
        }
    }

    #[test]
    fn hosts_are_ordered_by_preference_and_equal_ones_shuffled() {
        let hosts = vec![
            host("c", 20),
            host("a1", 10),
            host("b", 15),
            host("a2", 10),
            host("a3", 10),
        ];
        let mut first_seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let ordered = order_by_preference(hosts.clone(), &mut rand::rng());
            let prefs: Vec<u16> = ordered.iter().map(|h| h.preference).collect();
            assert_eq!(prefs, [10, 10, 10, 15, 20]);
            first_seen.insert(ordered[0].exchange.clone());
        }
        assert_eq!(
            first_seen.len(),
            3,
            "each equal-preference host comes first sometimes"
        );
    }

    #[test]
    fn a_host_listed_twice_is_tried_once_at_its_best_preference() {
        let ordered = order_by_preference(vec![host("a", 20), host("a", 10)], &mut rand::rng());
        assert_eq!(ordered, [host("a", 10)]);
    }

    #[test]
    fn names_are_absolute_lower_case_and_idna() {
        assert_eq!(
            display_name(&fqdn("MX.Example.FR.").unwrap()),
            "mx.example.fr"
        );
        assert_eq!(
            display_name(&fqdn("hôpital.fr").unwrap()),
            "xn--hpital-ixa.fr"
        );
        assert!(fqdn("").is_err());
        assert!(fqdn(&"a".repeat(64)).is_err());
    }

    #[test]
    fn settings_read_from_toml() {
        let s: DnsSettings = toml::from_str(
            "name_servers = [\"127.0.0.1:5353\"]\ntimeout = \"500ms\"\nattempts = 1\ncache_size = 10\n",
        )
        .unwrap();
        assert_eq!(
            s.name_servers,
            ["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert_eq!(s.attempts, 1);
        assert_eq!(s.cache_size, 10);
        assert!(s.validate().is_empty());

        let defaults: DnsSettings = toml::from_str("").unwrap();
        assert_eq!(defaults, DnsSettings::default());
    }

    #[test]
    fn settings_problems_name_the_key() {
        let bad = toml::from_str::<DnsSettings>("timeout = \"5 fortnights\"").unwrap_err();
        assert!(bad.to_string().contains("is not a duration"), "{bad}");
        assert!(toml::from_str::<DnsSettings>("server = \"x\"").is_err());
        assert!(toml::from_str::<DnsSettings>("name_servers = [\"localhost\"]").is_err());

        let s = DnsSettings {
            name_servers: vec!["127.0.0.1:0".parse().unwrap()],
            timeout: Duration::ZERO,
            attempts: 0,
            cache_size: 0,
        };
        let keys: Vec<&str> = s.validate().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["timeout", "attempts", "cache_size", "name_servers"]);
    }

    #[test]
    fn a_resolver_is_built_outside_a_runtime() {
        let settings = DnsSettings {
            name_servers: vec!["127.0.0.1:5353".parse().unwrap()],
            ..DnsSettings::default()
        };
        assert!(Resolver::new(&settings).is_ok());
    }

    #[test]
    fn errors_say_whether_to_bounce_or_retry() {
        let temporary = DnsError::Temporary {
            name: "a.fr".into(),
            detail: "timeout".into(),
        };
        assert!(!temporary.is_permanent());
        assert_eq!(temporary.reason(), "dns_temporary");
        let null = DnsError::NullMx {
            domain: "a.fr".into(),
        };
        assert!(null.is_permanent());
        assert_eq!(null.reason(), "dns_null_mx");
        let nx = DnsError::NoSuchDomain {
            name: "a.fr".into(),
        };
        assert!(nx.is_permanent());
        assert_eq!(nx.reason(), "dns_nxdomain");
    }
}
