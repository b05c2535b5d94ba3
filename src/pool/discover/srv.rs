//! SRV records to servers (RFC 2782): the port and weight come from the
//! record, the addresses from the target's A/AAAA records. fulcrum has two
//! tiers, so the lowest priority present is the primaries and every other
//! priority is backup (used only when no primary is usable), as nginx's
//! `service=` does; a weight of 0 counts as 1, the smallest weight fulcrum
//! has. A record whose target is `.` ("no such service here") is skipped.

use super::{Found, MAX_SERVERS};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// The fields of one SRV record that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Lowercase, without the final dot (the key of the address map).
    pub target: String,
}

/// A DNS name as the address map keys it.
pub(crate) fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Keeps the records worth looking targets up for: no `.` targets, lowest
/// priorities first, at most [`MAX_SERVERS`] (each target costs a lookup).
pub(crate) fn bound(records: &mut Vec<SrvRecord>) {
    records.retain(|r| !r.target.is_empty());
    records.sort_by(|a, b| {
        (a.priority, &a.target, a.port, b.weight).cmp(&(b.priority, &b.target, b.port, a.weight))
    });
    records.dedup_by(|b, a| a.target == b.target && a.port == b.port);
    records.truncate(MAX_SERVERS);
}

/// One [`Found`] per (record, target address): the lowest priority among
/// the records that have addresses is the primary tier.
pub(crate) fn to_found(records: &[SrvRecord], addrs: &HashMap<String, Vec<IpAddr>>) -> Vec<Found> {
    let has_addr = |r: &&SrvRecord| addrs.get(&r.target).is_some_and(|v| !v.is_empty());
    let Some(primary) = records.iter().filter(has_addr).map(|r| r.priority).min() else {
        return vec![];
    };
    records
        .iter()
        .filter(has_addr)
        .flat_map(|r| {
            addrs[&r.target].iter().map(move |ip| Found {
                addr: SocketAddr::new(*ip, r.port),
                from: 0,
                weight: u32::from(r.weight).max(1),
                backup: r.priority != primary,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: key(target),
        }
    }

    #[test]
    fn lowest_priority_is_primary_others_backup_weight_follows() {
        let records = [
            rec(10, 60, 3001, "a.example."),
            rec(10, 0, 3002, "b.example."),
            rec(20, 5, 3003, "c.example."),
            rec(30, 1, 3004, "d.example."),
        ];
        let addrs: HashMap<String, Vec<IpAddr>> = [
            ("a.example", vec!["10.0.0.1".parse().unwrap()]),
            (
                "b.example",
                vec!["10.0.0.2".parse().unwrap(), "::2".parse().unwrap()],
            ),
            ("c.example", vec!["10.0.0.3".parse().unwrap()]),
            ("d.example", vec!["10.0.0.4".parse().unwrap()]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let got: Vec<(String, u32, bool)> = to_found(&records, &addrs)
            .into_iter()
            .map(|f| (f.addr.to_string(), f.weight, f.backup))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1:3001".to_string(), 60, false),
                ("10.0.0.2:3002".to_string(), 1, false),
                ("[::2]:3002".to_string(), 1, false),
                ("10.0.0.3:3003".to_string(), 5, true),
                ("10.0.0.4:3004".to_string(), 1, true),
            ]
        );
    }

    #[test]
    fn targets_without_addresses_do_not_make_a_tier() {
        let records = [rec(0, 1, 80, "gone.example"), rec(5, 1, 81, "here.example")];
        let addrs: HashMap<String, Vec<IpAddr>> = [(
            "here.example".to_string(),
            vec!["10.0.0.5".parse().unwrap()],
        )]
        .into();
        let got = to_found(&records, &addrs);
        assert_eq!(got.len(), 1);
        assert!(
            !got[0].backup,
            "the lowest priority with addresses is primary"
        );
        assert!(to_found(&records, &HashMap::new()).is_empty());
    }

    #[test]
    fn bound_drops_dot_targets_repeats_and_the_excess() {
        let mut records = vec![rec(1, 1, 80, "."), rec(1, 1, 80, "a"), rec(1, 9, 80, "a")];
        records.extend((0..10_000).map(|i| rec(2, 1, 80, &format!("t{i}"))));
        bound(&mut records);
        assert_eq!(records.len(), MAX_SERVERS);
        assert_eq!(records[0], rec(1, 9, 80, "a"), "the heavier repeat is kept");
        assert!(records[1..].iter().all(|r| r.priority == 2));
    }
}
