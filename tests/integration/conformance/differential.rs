//! What the differential suites share (HTTP/1.1: conformance/mod.rs;
//! HTTP/2: conformance_h2.rs): running cases from loopback lanes, the
//! table of deliberate differences, and the report that fails on the rest.

pub use super::compare::Aspect;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;

/// A difference that is meant to be: in `case`, these `aspects` differ,
/// for `reason`.
pub struct Deliberate {
    pub case: &'static str,
    pub aspects: &'static [&'static str],
    pub reason: &'static str,
}

/// The outcome of one case: its aspects, nginx's against fulcrum's.
pub struct Outcome {
    pub name: String,
    /// A column of the report (the case's kind), may be empty.
    pub kind: String,
    pub aspects: Vec<Aspect>,
}

/// `CONFORMANCE_ONLY=text` runs only the cases whose name contains `text`
/// and prints everything both proxies did with them.
pub fn only() -> Option<String> {
    std::env::var("CONFORMANCE_ONLY")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Runs `run` on every case, `workers` at a time; worker `w` gets the
/// lanes 127.0.N.w for nginx and 127.0.F.w for fulcrum, `(N, F) = nets`
/// (each lane's address is how the recorder tells the cases apart).
pub fn in_lanes<C: Sync, O: Send>(
    cases: &[C],
    workers: usize,
    nets: (u8, u8),
    run: impl Fn(&C, IpAddr, IpAddr) -> O + Sync,
) -> Vec<O> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<O>>> = Mutex::new((0..cases.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for w in 0..workers {
            let (next, out, run) = (&next, &out, &run);
            s.spawn(move || {
                let w = u8::try_from(w + 1).unwrap();
                let nginx_lane = IpAddr::V4(Ipv4Addr::new(127, 0, nets.0, w));
                let fulcrum_lane = IpAddr::V4(Ipv4Addr::new(127, 0, nets.1, w));
                loop {
                    let i = next.fetch_add(1, SeqCst);
                    let Some(case) = cases.get(i) else { return };
                    let o = run(case, nginx_lane, fulcrum_lane);
                    out.lock().unwrap()[i] = Some(o);
                }
            });
        }
    });
    out.into_inner()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

fn deliberate<'a>(table: &'a [Deliberate], case: &str, aspect: &str) -> Option<&'a Deliberate> {
    table
        .iter()
        .find(|d| d.case == case && d.aspects.contains(&aspect))
}

/// Shortens a value for the report.
fn clip(s: &str) -> String {
    const MAX: usize = 160;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!(
            "{}... ({} chars)",
            s.chars().take(MAX).collect::<String>(),
            s.chars().count()
        )
    }
}

/// Prints the table of cases and the differences; returns the failures:
/// every difference not in `table`, and every entry of `table` that names
/// no case or aspect or whose difference did not occur (fulcrum then lacks
/// the listed behaviour).
pub fn report(outcomes: &[Outcome], table: &[Deliberate]) -> Vec<String> {
    let mut failures = vec![];
    let mut details = vec![];
    println!("\n{:<70} {:<9} verdict", "case", "kind");
    for o in outcomes {
        let diffs: Vec<&Aspect> = o.aspects.iter().filter(|a| a.differs()).collect();
        let unexplained = diffs
            .iter()
            .filter(|a| deliberate(table, &o.name, a.name).is_none())
            .count();
        let verdict = match (diffs.len(), unexplained) {
            (0, _) => "agree".to_string(),
            (_, 0) => "differ (deliberate)".to_string(),
            (n, u) => format!("DIFFER ({u} unexplained of {n})"),
        };
        println!("{:<70} {:<9} {verdict}", clip(&o.name), o.kind);
        for a in diffs {
            let why = deliberate(table, &o.name, a.name);
            details.push(format!(
                "{} / {}{}\n    nginx:   {}\n    fulcrum: {}",
                o.name,
                a.name,
                why.map_or(String::new(), |d| format!(" (deliberate: {})", d.reason)),
                clip(&a.nginx),
                clip(&a.fulcrum)
            ));
            if why.is_none() {
                failures.push(format!("{} / {}", o.name, a.name));
            }
        }
    }
    failures.extend(stale_entries(outcomes, table));
    if !details.is_empty() {
        println!("\nDifferences:");
        for d in &details {
            println!("{d}");
        }
    }
    failures
}

fn stale_entries(outcomes: &[Outcome], table: &[Deliberate]) -> Vec<String> {
    let mut out = vec![];
    for d in table {
        let Some(o) = outcomes.iter().find(|o| o.name == d.case) else {
            if only().is_none() {
                out.push(format!("deliberate entry names no case: {}", d.case));
            }
            continue;
        };
        for aspect in d.aspects {
            match o.aspects.iter().find(|a| a.name == *aspect) {
                None => out.push(format!("deliberate entry names no aspect: {} / {aspect}", d.case)),
                Some(a) if !a.differs() => out.push(format!(
                    "{} / {aspect}: listed as deliberate, but both give {:?} (fulcrum should differ: {})",
                    d.case,
                    clip(&a.nginx),
                    d.reason
                )),
                Some(_) => {}
            }
        }
    }
    out
}
