//! One lookup of a pool's source through hickory's resolver: the host names
//! of `resolve:` (A and AAAA) or the SRV name of `discover:` (then its
//! targets). What counts as a failure, which keeps the last good answer:
//! an error, a timeout, an empty answer, or an answer whose every address
//! is outside `allow`. Under `resolve:` each host name fails on its own:
//! the others still update.

use super::srv::{self, SrvRecord};
use super::{settle, Found};
use crate::config::{Cidr, DiscoveryConfig, DiscoverySource, HostServer};
use futures_util::future::join_all;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, Record};
use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Time for one query to one DNS server before it counts as failed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// A resolver for one pool's `resolvers` (or the system's).
pub(crate) struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// `resolvers` as `ip:port`, asked over UDP, then over TCP for a
    /// truncated answer; none: `/etc/resolv.conf` (with `/etc/hosts`
    /// first, as the C library does). Hickory's own cache is off: the pool
    /// decides when to ask again, and a DNS server in between caches anyway.
    /// Must be called within a tokio runtime: its queries run there.
    pub(crate) fn new(resolvers: &[SocketAddr]) -> Result<Resolver, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if resolvers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| format!("cannot read the system's DNS settings: {e}"))?
        } else {
            let servers = resolvers
                .iter()
                .map(|a| {
                    let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                    for c in &mut ns.connections {
                        c.port = a.port();
                    }
                    ns
                })
                .collect();
            let mut b = TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                provider,
            );
            b.options_mut().use_hosts_file = ResolveHosts::Never;
            b
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.cache_size = 0;
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = 1;
        let inner = builder.build().map_err(|e| format!("resolver: {e}"))?;
        Ok(Resolver { inner })
    }
}

/// A good lookup.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Settled (ordered, deduplicated, capped).
    pub found: Vec<Found>,
    /// The smallest TTL of the records used, in seconds.
    pub ttl: Option<u32>,
    /// `resolve:` only: host names that failed and kept their last addresses.
    pub partial: Vec<String>,
    /// Addresses dropped for being outside `allow`.
    pub outside_allow: usize,
    /// Addresses cut by the cap.
    pub over_cap: usize,
}

/// Looks `d`'s source up once; `last` is the last good answer (what a
/// failing host name keeps). `Err` says why nothing changes.
pub(crate) async fn lookup(
    resolver: &Resolver,
    d: &DiscoveryConfig,
    last: Option<&[Found]>,
) -> Result<Answer, String> {
    let mut filter = Allow::new(&d.allow);
    let (mut found, ttl, partial) = match &d.source {
        DiscoverySource::Hosts(hosts) => hosts_lookup(resolver, hosts, last, &mut filter).await?,
        DiscoverySource::Srv { name, .. } => {
            let (found, ttl) = srv_lookup(resolver, name, &mut filter).await?;
            (found, ttl, vec![])
        }
    };
    let over_cap = settle(&mut found);
    Ok(Answer {
        found,
        ttl,
        partial,
        outside_allow: filter.dropped,
        over_cap,
    })
}

/// `allow` applied to answers, counting what it drops.
struct Allow<'a> {
    blocks: &'a [Cidr],
    dropped: usize,
}

impl<'a> Allow<'a> {
    fn new(blocks: &'a [Cidr]) -> Self {
        Allow { blocks, dropped: 0 }
    }

    fn keep(&mut self, ip: IpAddr) -> bool {
        let ok = self.blocks.is_empty() || self.blocks.iter().any(|c| c.contains(ip));
        if !ok {
            self.dropped += 1;
        }
        ok
    }
}

fn smallest_ttl(records: &[Record]) -> Option<u32> {
    records.iter().map(|r| r.ttl).min()
}

/// A hickory error in a few words (no records is the common case).
fn describe(name: &str, e: &NetError) -> String {
    if e.is_nx_domain() {
        format!("{name}: no such name")
    } else if e.is_no_records_found() {
        format!("{name}: no records")
    } else {
        format!("{name}: {e}")
    }
}

type HostsAnswer = (Vec<Found>, Option<u32>, Vec<String>);

async fn hosts_lookup(
    resolver: &Resolver,
    hosts: &[HostServer],
    last: Option<&[Found]>,
    allow: &mut Allow<'_>,
) -> Result<HostsAnswer, String> {
    let answers = join_all(
        hosts
            .iter()
            .map(|h| resolver.inner.lookup_ip(h.host.as_str())),
    )
    .await;
    let mut found = vec![];
    let mut ttl: Option<u32> = None;
    let mut errors = vec![];
    for (i, (h, answer)) in hosts.iter().zip(answers).enumerate() {
        let result = match answer {
            Ok(a) => {
                let ips: Vec<IpAddr> = a.iter().filter(|ip| allow.keep(*ip)).collect();
                if ips.is_empty() {
                    Err(format!("{}: no address (allowed)", h.host))
                } else {
                    ttl = min_ttl(ttl, smallest_ttl(a.as_lookup().answers()));
                    Ok(ips)
                }
            }
            Err(e) => Err(describe(&h.host, &e)),
        };
        match result {
            Ok(ips) => found.extend(ips.into_iter().map(|ip| Found {
                addr: SocketAddr::new(ip, h.port),
                from: i,
                weight: h.settings.weight,
                backup: h.settings.backup,
            })),
            Err(e) => {
                errors.push(e);
                // This host keeps what it had.
                found.extend(
                    last.unwrap_or_default()
                        .iter()
                        .filter(|f| f.from == i)
                        .cloned(),
                );
            }
        }
    }
    if errors.len() == hosts.len() {
        return Err(errors.join("; "));
    }
    Ok((found, ttl, errors))
}

async fn srv_lookup(
    resolver: &Resolver,
    name: &str,
    allow: &mut Allow<'_>,
) -> Result<(Vec<Found>, Option<u32>), String> {
    let answer = resolver
        .inner
        .srv_lookup(name)
        .await
        .map_err(|e| describe(name, &e))?;
    let mut records: Vec<SrvRecord> = answer
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(SrvRecord {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: srv::key(&s.target.to_ascii()),
            }),
            _ => None,
        })
        .collect();
    if records.is_empty() {
        return Err(format!("{name}: no SRV records"));
    }
    srv::bound(&mut records);
    let mut ttl = smallest_ttl(answer.answers());
    // Targets' addresses: from the answer's additional section when the
    // server sent them, else looked up.
    let mut addrs: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for r in answer.additionals() {
        if let Some(ip) = r.data.ip_addr() {
            addrs
                .entry(srv::key(&r.name.to_ascii()))
                .or_default()
                .push(ip);
        }
    }
    let mut missing: Vec<&str> = records
        .iter()
        .map(|r| r.target.as_str())
        .filter(|t| !addrs.contains_key(*t))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    // An absolute name: no search domains for a target.
    let looked = join_all(
        missing
            .iter()
            .map(|t| resolver.inner.lookup_ip(format!("{t}."))),
    )
    .await;
    for (t, a) in missing.iter().zip(looked) {
        match a {
            Ok(a) => {
                ttl = min_ttl(ttl, smallest_ttl(a.as_lookup().answers()));
                addrs.insert(t.to_string(), a.iter().collect());
            }
            // A target without addresses is left out; any other failure
            // makes the whole answer doubtful.
            Err(e) if e.is_no_records_found() => {}
            Err(e) => return Err(describe(t, &e)),
        }
    }
    for ips in addrs.values_mut() {
        ips.retain(|ip| allow.keep(*ip));
    }
    let found = srv::to_found(&records, &addrs);
    if found.is_empty() {
        return Err(format!("{name}: no target with an (allowed) address"));
    }
    Ok((found, ttl))
}

/// The smaller of two TTLs, either possibly unknown.
fn min_ttl(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}
