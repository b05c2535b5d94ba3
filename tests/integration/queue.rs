//! `queue: { size, timeout }`: requests wait for a server below
//! `max_conns` instead of getting 503 at once; first in first out across
//! worker threads (fulcrum runs with `threads: 2` here); full and timeout
//! answer 503 naming the pool and the reason; a client that goes away
//! leaves the queue at once. Without a queue: 503 as before.

use crate::common::*;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pool `svc` at `/` over `servers`, each with `max_conns`, and `queue`
/// (a YAML flow map) if given.
fn conf(servers: &[SocketAddr], max_conns: u32, queue: Option<&str>) -> String {
    let mut extra = String::from("max_fails: 0\n");
    if let Some(q) = queue {
        extra.push_str(&format!("queue: {q}\n"));
    }
    let opts = format!("max_conns: {max_conns}");
    let list: Vec<(SocketAddr, &str)> = servers.iter().map(|a| (*a, opts.as_str())).collect();
    pool_with("svc", "/", &list, &extra)
}

/// The pool's queue in the JSON status.
fn queue_status(f: &Fulcrum) -> serde_json::Value {
    f.status_json()["pools"][0]["queue"].clone()
}

fn queue_length(f: &Fulcrum) -> u64 {
    queue_status(f)["length"].as_u64().expect("a queue")
}

/// Waits until `n` requests are queued.
fn wait_queued(f: &Fulcrum, n: u64) {
    assert!(
        wait_until(Duration::from_secs(10), || queue_length(f) == n),
        "queue length {} instead of {n}",
        queue_length(f)
    );
}

/// `queue_time` of every access log line that has one, in seconds.
fn queue_times(f: &Fulcrum) -> Vec<f64> {
    f.log_text()
        .lines()
        .filter_map(|l| l.split(" queue_time=").nth(1))
        .map(|t| t.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// A request sent on a connection of its own and not read yet.
fn send(addr: SocketAddr, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{head}").unwrap();
    s
}

fn answer(s: TcpStream) -> Response {
    read_response(&mut BufReader::new(s), false).unwrap()
}

/// `clients` threads each sending `requests` GETs, a new connection each
/// (so they spread over fulcrum's threads), while a sampler reads the JSON
/// status. Returns the responses, the longest time a client waited, and
/// the most in flight on one server and in the queue that the sampler saw.
fn load(f: &Fulcrum, clients: usize, requests: usize) -> (Vec<Response>, Duration, u64, u64) {
    let done = Arc::new(AtomicBool::new(false));
    let (max_in_flight, max_queued) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (done, max_in_flight, max_queued) =
            (done.clone(), max_in_flight.clone(), max_queued.clone());
        let addr = f.addr;
        std::thread::spawn(move || {
            while !done.load(Relaxed) {
                let doc: serde_json::Value = get(addr, "/nginx-status/json").json();
                let pool = &doc["pools"][0];
                for s in pool["servers"].as_array().unwrap() {
                    max_in_flight.fetch_max(s["in_flight"].as_u64().unwrap(), Relaxed);
                }
                if let Some(n) = pool["queue"]["length"].as_u64() {
                    max_queued.fetch_max(n, Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let addr = f.addr;
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let mut out = vec![];
                for i in 0..requests {
                    let start = Instant::now();
                    let r = get(addr, &format!("/load/{c}/{i}"));
                    out.push((r, start.elapsed()));
                }
                out
            })
        })
        .collect();
    let results: Vec<(Response, Duration)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    done.store(true, Relaxed);
    sampler.join().unwrap();
    let longest = results.iter().map(|(_, d)| *d).max().unwrap();
    let responses = results.into_iter().map(|(r, _)| r).collect();
    (
        responses,
        longest,
        max_in_flight.load(Relaxed),
        max_queued.load(Relaxed),
    )
}

#[test]
fn ten_clients_on_two_servers_of_max_conns_one_all_succeed_within_the_timeout() {
    let b = Backends::start(&["a", "b"], &["--delay-ms", "50", "--threads", "2"]);
    let f = Fulcrum::start(&conf(
        &[b.addr("a"), b.addr("b")],
        1,
        Some("{size: 100, timeout: 5s}"),
    ));
    let (responses, longest, max_in_flight, max_queued) = load(&f, 10, 5);
    let failed: Vec<_> = responses.iter().filter(|r| r.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(b.requests("a") + b.requests("b"), 50);
    assert!(
        max_in_flight <= 1,
        "max_conns 1, saw {max_in_flight} in flight"
    );
    assert!(max_queued >= 2, "the queue was hardly used: {max_queued}");
    let q = queue_status(&f);
    assert_eq!(q["length"], 0);
    assert_eq!(q["left"]["dispatched"], q["queued"]);
    assert_eq!(q["left"]["timeout"], 0);
    assert_eq!(q["full"], 0);
    // Every queued request says how long it waited; none beyond timeout.
    let ok = wait_until(Duration::from_secs(5), || {
        queue_times(&f).len() as u64 == q["queued"].as_u64().unwrap()
    });
    let times = queue_times(&f);
    assert!(
        ok,
        "{} queue_time fields, {} queued",
        times.len(),
        q["queued"]
    );
    let max = times.iter().copied().fold(0.0, f64::max);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    assert!(max < 5.0, "waited {max} s, beyond the timeout");
    eprintln!(
        "queue: {} of 50 requests queued, wait mean {:.3} s, max {max:.3} s; longest client time {:.3} s; max queue length seen {max_queued}",
        times.len(),
        mean,
        longest.as_secs_f64()
    );
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn without_a_queue_the_same_load_gets_503_as_before() {
    let b = Backends::start(&["a", "b"], &["--delay-ms", "50", "--threads", "2"]);
    let f = Fulcrum::start(&conf(&[b.addr("a"), b.addr("b")], 1, None));
    let (responses, _, max_in_flight, _) = load(&f, 10, 5);
    let busy: Vec<_> = responses.iter().filter(|r| r.status == 503).collect();
    assert!(!busy.is_empty(), "no 503 without a queue");
    assert!(
        busy.iter().all(
            |r| r.body == "503 Service Unavailable: every server of pool svc is at max_conns\n"
        ),
        "{:?}",
        busy[0].body
    );
    assert!(responses.iter().all(|r| r.status == 200 || r.status == 503));
    assert!(max_in_flight <= 1);
    assert!(f.status_json()["pools"][0]["queue"].is_null());
    eprintln!("no queue: {} of 50 requests got 503", busy.len());
}

#[test]
fn a_full_queue_answers_503_naming_the_pool_and_the_reason() {
    let b = Backends::start(&["a"], &[]);
    let f = Fulcrum::start(&conf(&[b.addr("a")], 1, Some("{size: 2, timeout: 10s}")));
    let hold = send(
        f.addr,
        "GET /hold?delay_ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(wait_until(Duration::from_secs(5), || f.total_in_flight() == 1));
    let waiting: Vec<TcpStream> = (0..2)
        .map(|i| {
            send(
                f.addr,
                &format!("GET /waits/{i} HTTP/1.1\r\nHost: x\r\n\r\n"),
            )
        })
        .collect();
    wait_queued(&f, 2);
    let start = Instant::now();
    let r = f.get("/one-too-many");
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "503 Service Unavailable: queue full in pool svc\n");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "not refused at once"
    );
    let metrics = f.get("/nginx-status/metrics").body;
    let families = prom::parse(&metrics).unwrap_or_else(|e| panic!("{e}\n{metrics}"));
    families.family("fulcrum_pool_queue_wait_seconds", "histogram");
    families.family("fulcrum_pool_queue_left_total", "counter");
    for line in [
        "fulcrum_pool_queue_length{pool=\"svc\"} 2",
        "fulcrum_pool_queue_size{pool=\"svc\"} 2",
        "fulcrum_pool_queue_full_total{pool=\"svc\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }
    // The queued ones are served once the slot frees, in order.
    assert_eq!(answer(hold).status, 200);
    for w in waiting {
        assert_eq!(answer(w).status, 200);
    }
    let q = queue_status(&f);
    assert_eq!(
        (q["full"].as_u64(), q["left"]["dispatched"].as_u64()),
        (Some(1), Some(2))
    );
}

#[test]
fn a_request_queued_past_the_timeout_gets_503_queue_timeout() {
    let b = Backends::start(&["a"], &[]);
    let f = Fulcrum::start(&conf(&[b.addr("a")], 1, Some("{size: 10, timeout: 300ms}")));
    let hold = send(
        f.addr,
        "GET /hold?delay_ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(wait_until(Duration::from_secs(5), || f.total_in_flight() == 1));
    let start = Instant::now();
    let r = f.get("/late");
    let waited = start.elapsed();
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "503 Service Unavailable: queue timeout in pool svc\n"
    );
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(
        waited < Duration::from_millis(2500),
        "held until the slot freed: {waited:?}"
    );
    let q = queue_status(&f);
    assert_eq!(
        (q["length"].as_u64(), q["left"]["timeout"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(wait_until(Duration::from_secs(5), || !queue_times(&f).is_empty()));
    let logged = queue_times(&f)[0];
    assert!((0.3..2.5).contains(&logged), "queue_time={logged}");
    eprintln!("queue timeout 300ms: answered after {waited:?}, logged queue_time={logged}");
    assert_eq!(answer(hold).status, 200);
    assert_eq!(
        b.requests("a"),
        1,
        "the late request never reached the server"
    );
}

#[test]
fn a_client_that_disconnects_leaves_the_queue_at_once() {
    let b = Backends::start(&["a"], &[]);
    let f = Fulcrum::start(&conf(&[b.addr("a")], 1, Some("{size: 10, timeout: 20s}")));
    let hold = send(
        f.addr,
        "GET /hold?delay_ms=4000 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(wait_until(Duration::from_secs(5), || f.total_in_flight() == 1));
    // A request without a body (watched with Pingora's idle read) and one
    // whose body has not come yet (watched by polling the socket).
    for (i, head) in [
        "GET /gone HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /gone-with-body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        let client = send(f.addr, head);
        wait_queued(&f, 1);
        let start = Instant::now();
        drop(client);
        assert!(
            wait_until(Duration::from_secs(1), || queue_length(&f) == 0),
            "still queued after its client went away"
        );
        eprintln!(
            "client gone ({head:.4}...): out of the queue within {:?}",
            start.elapsed()
        );
        assert_eq!(queue_status(&f)["left"]["abandoned"], i as u64 + 1);
    }
    // The holder is still being served: nothing else freed the slot.
    assert_eq!(f.total_in_flight(), 1);
    assert_eq!(answer(hold).status, 200);
    assert_eq!(
        b.requests("a"),
        1,
        "no abandoned request reached the server"
    );
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn waiters_are_served_in_arrival_order_across_worker_threads() {
    let b = Backends::start(&["a"], &[]);
    let f = Fulcrum::start(&conf(&[b.addr("a")], 1, Some("{size: 100, timeout: 20s}")));
    // Connections are given to fulcrum's two threads in turn as accepted:
    // opened back to back, consecutive ones are on different threads.
    let mut conns: Vec<TcpStream> = (0..9)
        .map(|_| {
            let s = TcpStream::connect(f.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s
        })
        .collect();
    write!(
        conns[0],
        "GET /hold?delay_ms=1000 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || f.total_in_flight() == 1));
    for (i, c) in conns.iter_mut().enumerate().skip(1) {
        write!(c, "GET /q/{i} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        wait_queued(&f, i as u64);
    }
    for c in conns {
        assert_eq!(answer(c).status, 200);
    }
    let stats: serde_json::Value = serde_json::from_str(&b.stats("a")).unwrap();
    let order: Vec<&str> = stats["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["uri"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = std::iter::once("/hold?delay_ms=1000".to_string())
        .chain((1..9).map(|i| format!("/q/{i}")))
        .collect();
    assert_eq!(order, expected);
}

#[test]
fn a_request_pipelined_behind_a_queued_one_is_answered_after_it() {
    let b = Backends::start(&["a"], &[]);
    let f = Fulcrum::start(&conf(&[b.addr("a")], 1, Some("{size: 10, timeout: 20s}")));
    let hold = send(f.addr, "GET /hold?delay_ms=800 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(wait_until(Duration::from_secs(5), || f.total_in_flight() == 1));
    let mut client = send(f.addr, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_queued(&f, 1);
    // The next request arrives while the first waits: the watch for a
    // client gone reads its first byte, which must reach its session.
    write!(client, "GET /second HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        queue_length(&f),
        1,
        "bytes of a next request are not a client gone"
    );
    let mut reader = BufReader::new(client);
    for path in ["/first", "/second"] {
        let r = read_response(&mut reader, false).unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.json()["path"], path);
    }
    assert_eq!(answer(hold).status, 200);
}
