//! Slow start in every selection: a warming server is priced with its
//! effective weight, so its share follows the ramp, idle or under load.

use super::rng::mix;
use super::testing::{backends, port_of, simulate};
use super::{ewma::Ewma, least_conn::LeastConn, p2c::P2c, Balanced, Metric};
use crate::config::ServerConfig;
use crate::pool::Server;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use std::sync::Arc;
use std::time::Duration;

const S: u64 = 1_000_000; // one second in µs

/// A time `secs` seconds after the ramp of [`two`] began, in µs. The base
/// is after the servers were made (their latency estimates start then).
fn at(secs: f64) -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| crate::clock::now_us() + 60 * S) + (secs * S as f64) as u64
}

/// Two servers of weight 1; the second has a 10 s slow start begun at `at(0.0)`.
fn two<M: Metric>() -> (Arc<Balanced<M>>, Vec<Arc<Server>>) {
    let (set, servers) = backends(&[(1, 1, false), (2, 1, false)]);
    for s in &servers {
        s.set_latency_params(Duration::from_secs(10), Duration::from_millis(1));
        s.apply(&ServerConfig {
            name: s.name.clone(),
            addr: s.addr,
            weight: 1,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            max_conns: 0,
            backup: false,
            down: false,
            slow_start: Duration::from_secs(10),
            tls: true,
        });
    }
    servers[1].warm_up(at(0.0) / 1000);
    (Arc::new(Balanced::<M>::build(&set)), servers)
}

/// The warming server's share of `n` sequential picks at `now_us`.
fn idle_share<M: Metric>(sel: &Arc<Balanced<M>>, now_us: u64, n: u64) -> f64 {
    let warm = (0..n)
        .filter(|&i| port_of(sel.iter_at(now_us, mix(i)).next().unwrap()) == 2)
        .count();
    warm as f64 / n as f64
}

/// Its share of weight `f` against a full weight 1.
fn expected(f: f64) -> f64 {
    f / (1.0 + f)
}

#[test]
fn idle_ties_follow_the_ramp_in_least_conn_and_p2c() {
    // Each quarter of the window (elapsed 0, 2.5 s, 5 s, 7.5 s, 10 s).
    let points = [
        (0.0, 0.1),
        (2.5, 0.325),
        (5.0, 0.55),
        (7.5, 0.775),
        (10.0, 1.0),
    ];
    for (at_s, f) in points {
        let now = at(at_s);
        let (sel, _s) = two::<LeastConn>();
        let got = idle_share(&sel, now, 2000);
        assert!(
            (got - expected(f)).abs() < 0.01,
            "least_conn at {at_s}s: {got}"
        );
        let (sel, _s) = two::<P2c>();
        let got = idle_share(&sel, now, 2000);
        assert!((got - expected(f)).abs() < 0.01, "p2c at {at_s}s: {got}");
    }
    // ewma prices idle servers by latency / weight, so there is no tie:
    // the warming server is the dearer one until its ramp is over.
    let (sel, s) = two::<Ewma>();
    for s in &s {
        s.load.latency.observe(1000.0, at(0.0));
    }
    assert_eq!(idle_share(&sel, at(5.0), 100), 0.0);
    assert!((idle_share(&sel, at(10.0), 100) - 0.5).abs() < 0.01);
}

#[test]
fn under_load_the_share_is_scaled_by_the_effective_weight() {
    // Early in the ramp (about 1/10 of its weight) in a closed loop of 20
    // requests always outstanding, equal latency: about 1/11 of the
    // requests, instead of 1/2.
    let (sel, servers) = two::<LeastConn>();
    let counts = simulate(&sel, &servers, &[1000, 1000], 20, 4000, 3);
    let share = counts[1] as f64 / 4000.0;
    assert!((0.06..0.14).contains(&share), "least_conn: {counts:?}");
    let (sel, servers) = two::<P2c>();
    let counts = simulate(&sel, &servers, &[1000, 1000], 20, 4000, 3);
    let share = counts[1] as f64 / 4000.0;
    assert!((0.06..0.14).contains(&share), "p2c: {counts:?}");
    let (sel, servers) = two::<Ewma>();
    let counts = simulate(&sel, &servers, &[1000, 1000], 20, 4000, 3);
    let share = counts[1] as f64 / 4000.0;
    assert!((0.04..0.14).contains(&share), "ewma: {counts:?}");
    // Without a ramp the same loop splits evenly.
    let (sel, servers) = two::<LeastConn>();
    servers[1].apply(&ServerConfig {
        slow_start: Duration::ZERO,
        ..config_of(&servers[1])
    });
    let counts = simulate(&sel, &servers, &[1000, 1000], 20, 4000, 3);
    let share = counts[1] as f64 / 4000.0;
    assert!((0.45..0.55).contains(&share), "no slow start: {counts:?}");
}

fn config_of(s: &Server) -> ServerConfig {
    ServerConfig {
        name: s.name.clone(),
        addr: s.addr,
        weight: s.weight(),
        max_fails: 1,
        fail_timeout: Duration::from_secs(10),
        max_conns: 0,
        backup: false,
        down: false,
        slow_start: s.slow_start(),
        tls: true,
    }
}

#[test]
fn round_robin_and_random_take_a_warming_server_by_its_share() {
    for selection in ["round_robin", "random"] {
        let doc = format!(
            "pools:\n  p:\n    selection: {selection}\n    slow_start: 1h\n    servers: [{{addr: \"127.0.0.1:1\"}}, {{addr: \"127.0.0.1:2\"}}]\n"
        );
        let cfg = crate::config::from_str(&doc, &|_| None).unwrap().config;
        let pool = crate::pool::Pool::new(cfg.pools[0].clone(), &Default::default());
        // Just became usable: about 1/10 of its weight.
        pool.servers[1].warm_up(crate::clock::now_ms());
        let n = 4000;
        let warm = (0..n)
            .filter(|_| pool.select(&[]).unwrap().server().addr.port() == 2)
            .count();
        let share = warm as f64 / n as f64;
        // Taken a tenth of the times it is offered: between a twentieth
        // and a tenth of the requests (what Pingora asks after a skip
        // differs: round_robin goes on with its rotation, random draws
        // uniformly), instead of half.
        assert!((0.03..0.12).contains(&share), "{selection}: {share}");
    }
}
