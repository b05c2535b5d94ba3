//! Bytes in and out: client connections (`downstream`) and connections to
//! servers (`upstream`), and the worker threads that run them.
//!
//! # Pingora's internals
//!
//! Everything in fulcrum that replaces a piece of Pingora or relies on how
//! Pingora works inside, beyond its documented API, lives in this tree:
//! `downstream` (listening sockets and accept loops, each client
//! connection's HTTP/1 loop, the header deadline) and `upstream` (the
//! connector, the idle lists, TCP options, kernel receive stamps). The Pingora
//! crates are pinned to the exact version (`=0.9.1`, Cargo.toml), and each
//! assumption below names the Pingora file it relies on (a path inside the
//! crate `pingora-core` unless said otherwise, with the function) and the
//! test that fails if a Pingora upgrade breaks it. The tests named alone
//! are in `tests/integration/pingora_contract.rs`: in-process, they drive Pingora's own
//! code on mock IO or loopback sockets the way fulcrum does.
//!
//! ## Client connections (`downstream`)
//!
//! 1. The client connection loop (`downstream::connection`) is a fork of
//!    Pingora's HTTP/1 loop: the first session of a connection gets a 60 s
//!    keepalive (none once shutting down) and no limit on reuses, each next
//!    one the settings of the previous. Pingora: `src/apps/mod.rs`,
//!    `impl ServerApp for T: HttpServerApp`, `process_new`. Test:
//!    `pingoras_http1_loop_sets_up_sessions_as_fulcrums_fork_does`.
//! 2. With `set_pipelining_enabled(true)`, the bytes Pingora read past a
//!    request, and the switch itself, reach the next session through
//!    `HttpPersistentSettings` (`for_session`, `apply_to_session`) and
//!    `ReusedHttpStream::from_reusable_stream`. Pingora: `src/apps/mod.rs`;
//!    `src/protocols/http/v1/server.rs`, `HttpSession::reuse`. Test:
//!    `pipelined_bytes_and_the_switch_reach_the_next_session_through_persistent_settings`.
//! 3. Without the switch, Pingora refuses to reuse a connection on which it
//!    read past the request, so fulcrum turns it on for every first session.
//!    Pingora: `src/protocols/http/v1/server.rs`, `HttpSession::reuse`.
//!    Test: `without_pipelining_pingora_refuses_reuse_after_reading_past_a_request`.
//! 4. fulcrum reads a request header itself before the session exists and
//!    hands it over with `set_pipelined_prefix`: a prefix that holds a whole
//!    header is parsed without a read from the stream, a partial one is
//!    continued from it. Pingora: `src/protocols/http/v1/server.rs`,
//!    `HttpSession::read_request`. Test:
//!    `a_prefix_holding_a_whole_header_is_parsed_without_reading_the_stream`.
//! 5. Pingora reads a client connection only through the stream it is given
//!    and holds exactly what it read past a request, so the bytes fulcrum
//!    gave it tell whether it holds the start of a next request
//!    (`HeaderDeadline::consumed_all`). Pingora:
//!    `src/protocols/http/v1/server.rs`, `read_request`, the body reader,
//!    `reuse`. Test: `pingora_holds_exactly_what_it_read_past_a_request`.
//! 6. The stream given to a session is the one `ServerSession::stream()`
//!    exposes and `reuse()` gives back, unwrapped: fulcrum finds its
//!    `HeaderDeadline` by downcasting. Pingora:
//!    `src/protocols/http/server.rs`, `Session::stream`, `finish`;
//!    `src/apps/mod.rs`, `ReusedHttpStream::consume`. Test:
//!    `the_stream_given_to_a_session_comes_back_unwrapped`.
//! 7. A session takes the client's address from its stream's socket digest,
//!    which fulcrum's own `ClientSocket` fills from `accept` (no timing
//!    digest, no TLS). Pingora: `src/protocols/http/v1/server.rs`,
//!    `HttpSession::new`, `client_addr`. Test:
//!    `a_session_takes_the_client_address_from_the_socket_digest`.
//! 8. The raw header Pingora keeps is the request line and fields as
//!    received; `proxy::limits` measures and checks it. Pingora:
//!    `src/protocols/http/v1/server.rs`, `get_headers_raw_bytes`
//!    (`ServerSession::to_h1_raw`). Test: `the_raw_header_is_the_bytes_as_received`.
//! 9. Pingora answers more than 256 header fields, or more than 1,048,575
//!    bytes of a header without its end, with an error itself, so
//!    `limits.max_header_count` and `limits.max_header_size` stop there
//!    (`config::PINGORA_MAX_HEADER_COUNT`, `PINGORA_MAX_HEADER_SIZE`).
//!    Pingora: `src/protocols/http/v1/common.rs`, `MAX_HEADERS`,
//!    `MAX_HEADER_SIZE`; `src/protocols/http/v1/server.rs`, `read_request`.
//!    Test: `pingora_refuses_headers_beyond_the_limits_fulcrum_configures_up_to`.
//! 10. The listening sockets (`downstream::listener`) go in Pingora's table
//!     of inherited sockets, keyed by the address as `SocketAddr` prints it,
//!     which Pingora hands to the next process over `upgrade_sock` (the
//!     handoff as root in `lifecycle::privileges` uses the same keys).
//!     Pingora: `src/server/transfer_fd/mod.rs`, `Fds::send_to_sock`,
//!     `Fds::get_from_sock`; `src/server/bootstrap_services.rs`,
//!     `Bootstrap::load_fds`. Test:
//!     `listening_sockets_pass_to_the_next_process_under_their_address`;
//!     across processes: tests/integration/upgrade.rs, tests/integration/privileges.rs.
//! 11. Pingora runs the listening service's `start_service` on a runtime of
//!     `threads()` threads (1: it is worker 0), passes it
//!     `listener_tasks_per_fd`, and ends the service by dropping that runtime
//!     after the grace period, which stops the other worker threads
//!     (`workers`). Pingora: `src/server/mod.rs`, `Server::run`,
//!     `Server::run_service`. Not in-process (private, and a whole server):
//!     tests/integration/workers.rs, tests/integration/limits.rs
//!     (`idle_connections_close_soon_after_a_stop_while_requests_still_drain`),
//!     tests/integration/drain.rs.
//!
//! ## The proxy (`crate::proxy`)
//!
//! 12. After a failed proxy attempt (502, 503, 504) Pingora ends the client
//!     connection whatever `FailToProxy::can_reuse_downstream` says, so
//!     fulcrum's own answers say `Connection: close`. Pingora:
//!     `pingora-proxy/src/lib.rs`, `HttpProxy::process_request` (its
//!     `finish` gets the proxy loop's verdict). Test:
//!     `a_failed_proxy_attempt_ends_the_client_connection_whatever_fail_to_proxy_says`.
//! 13. Pingora closes the client connection after any response header
//!     written before the request body is in, a `100 Continue` included,
//!     unless `set_close_on_response_before_downstream_finish(false)`; the
//!     flag is read at each header, so the proxy clears it for 1xx only.
//!     Pingora: `src/protocols/http/v1/server.rs`,
//!     `HttpSession::prepare_response_header`. Test:
//!     `a_1xx_before_the_body_closes_the_connection_unless_the_flag_is_cleared_for_it`.
//! 14. Pingora makes at most `max_retries` attempts per request (fulcrum
//!     raises it: `lifecycle::service::retry_limit`). Pingora:
//!     `pingora-proxy/src/lib.rs`, `HttpProxy::process_request`. Test:
//!     `pingora_makes_at_most_max_retries_attempts`.
//! 15. Pingora's proxy calls the response body filter with `end_of_stream`
//!     (where the proxy tells the lease the response is complete) before it
//!     releases the upstream connection, and reads nothing from it in
//!     between. Pingora: `pingora-proxy/src/proxy_h1.rs`,
//!     `proxy_handle_upstream`; `pingora-proxy/src/lib.rs`,
//!     `proxy_to_upstream`. Test:
//!     `pingoras_proxy_ends_the_body_before_it_releases_the_connection`.
//! 16. A response-header read that finds the connection closed is an error
//!     of `RetryType::ReusedOnly`; the proxy retries those when its
//!     connection came from the idle list. Pingora:
//!     `src/protocols/http/v1/client.rs`, `HttpSession::read_response`.
//!     Test: `a_connection_closed_before_the_answer_is_an_error_retried_on_reuse_only`.
//!
//! ## Connections to servers (`upstream`)
//!
//! 17. Pingora opens every upstream connection through the peer's
//!     `custom_l4` (`upstream::connector`), without a bind address, and
//!     finds none in its own pool, so its `reused` is always false (the
//!     lease says whether a connection was reused). Pingora:
//!     `src/connectors/l4.rs`, `connect`; `src/connectors/mod.rs`,
//!     `TransportConnector::get_stream`, `reused_stream`, `new_stream`.
//!     Test: `a_lent_connection_returns_to_fulcrums_idle_list_through_pingoras_release_path`.
//! 18. Before pooling a connection, Pingora's release path reads one byte
//!     (`now_or_never`) and drops the connection on end of file: the lent
//!     socket answers that read by putting a quiet connection back on the
//!     worker's idle list (so Pingora's pool never holds one), and finds
//!     bytes the server sent after its response. Pingora:
//!     `src/connectors/http/v1.rs`, `Connector::release_http_session`;
//!     `src/protocols/http/v1/client.rs`, `HttpSession::reuse`;
//!     `src/connectors/mod.rs`, `TransportConnector::release_stream`,
//!     `test_reusable_stream`. Tests:
//!     `a_lent_connection_returns_to_fulcrums_idle_list_through_pingoras_release_path`,
//!     `bytes_sent_after_the_response_are_found_by_the_release_read`.
//! 19. When Pingora refuses to reuse a connection (its body reader holds
//!     bytes past the Content-Length) it shuts the connection down
//!     (`poll_shutdown` on the lent socket), which is how the lease counts
//!     that server's failure. Pingora: `src/protocols/http/v1/client.rs`,
//!     `HttpSession::reuse`, `shutdown`; `src/protocols/l4/stream.rs`,
//!     `Shutdown for Stream`; `src/protocols/l4/virt.rs`. Test:
//!     `pingora_shuts_a_connection_down_when_it_read_past_the_content_length`.
//! 20. TCP options (`upstream::tcp`) are set by fulcrum's connector with
//!     Pingora's helpers (`src/protocols/l4/ext.rs`, `connect`,
//!     `set_tcp_keepalive`); Pingora's own per-peer socket options do not
//!     apply to a `custom_l4` connection, and the lent socket accepts the
//!     TCP_NODELAY Pingora asks of it as already done (`src/connectors/l4.rs`,
//!     `connect`; `VirtualSocket::set_socket_option`). Tests:
//!     `net::upstream::tcp` unit tests; tests/integration/blackhole.rs.
//! 21. Kernel receive stamps (`upstream::server_time`): the first read
//!     Pingora makes after writing a request is the answer's, through the
//!     lent socket (a virtual socket's stream has no read buffer of
//!     Pingora's). Pingora: `src/protocols/http/v1/client.rs`,
//!     `read_response`; `src/protocols/l4/stream.rs`,
//!     `From<VirtualSocketStream> for Stream`. Whether the kernel stamps a
//!     loopback packet varies under test load, so the stamp itself is
//!     checked by `net::upstream::server_time`'s unit test and
//!     tests/integration/ewma.rs (`a_stall_of_fulcrum_is_not_the_servers_latency`).
//!
//! ## Elsewhere
//!
//! 22. fulcrum runs Pingora's bootstrap before `Server::run`, which then
//!     daemonizes and does not bootstrap again; Pingora's readiness signal
//!     to the parent of a daemon (`daemon_wait_for_ready`) is sent from
//!     bootstrap only, so that key is rejected. Pingora:
//!     `src/server/mod.rs`, `Server::run`; `src/server/bootstrap_services.rs`,
//!     `Bootstrap::bootstrap`. Tests: tests/integration/upgrade.rs, tests/integration/privileges.rs;
//!     `config::validate::tests::rejected_pingora_keys_are_errors_that_give_the_reason`.
//! 23. After SIGQUIT Pingora keeps accepting for 5 s (`CLOSE_TIMEOUT`,
//!     `lifecycle::service::HANDOVER_ACCEPT_SECONDS`), then its proxy's
//!     cleanup drops connections waiting for a request
//!     (`lifecycle::drain`). Pingora: `src/server/mod.rs`, `main_loop`;
//!     `pingora-proxy/src/lib.rs`, `http_cleanup`. Tests: tests/integration/upgrade.rs,
//!     tests/integration/limits.rs
//!     (`a_header_being_received_when_the_process_leaves_is_still_answered`).
//! 24. Pingora's own config keys are its `ServerConf`'s fields, read from the
//!     same file; the ones with no effect in fulcrum, or that break it, are
//!     rejected by `fulcrum -t` with the reason. Pingora:
//!     `src/server/configuration/mod.rs`, `ServerConf`. Tests:
//!     `config::pingora_keys` unit tests, tests/integration/pingora_keys.rs.
//!
//! ## TLS and HTTP/2
//!
//! 25. A client connection that speaks HTTP/2 (ALPN h2 on fulcrum's TLS
//!     stream, or the h2c preface found by `downstream::handshake`) goes
//!     to Pingora's blanket `ServerApp` for HTTP apps, which decides by
//!     the stream's `selected_alpn_proto()`, runs the HTTP/2 handshake with
//!     the proxy's `h2_options`, spawns a task per stream on
//!     `pingora_runtime::current_handle()` (outside Pingora's no-steal
//!     runtime: the calling worker's runtime), closes an idle connection
//!     after `server_options.h2_idle_timeout`, and sends GOAWAY when the
//!     `shutdown` watch fires, finishing open streams. Pingora:
//!     `src/apps/mod.rs`, `process_new`; `src/protocols/http/v2/server.rs`,
//!     `accept_downstream_sessions`. Tests: tests/integration/tls.rs
//!     (`tls_with_http1_and_http2_and_h2c_reach_the_same_pool`,
//!     `a_graceful_stop_finishes_http2_streams_in_flight`),
//!     tests/integration/h2_abuse.rs (stream limit, idle connections).
//! 26. TLS and HTTP/2 pools are connected by Pingora's connector and kept
//!     in its pool (no `custom_l4`): fulcrum's idle lists hold bare TCP
//!     sockets only. Its rustls connector skips every certificate check
//!     when the peer's SNI is empty, so `upstream::peer` always sets one
//!     (`tls.sni`, else the server's host) and `verify: false` is the only
//!     way to turn checks off. Pingora: `src/connectors/http/mod.rs`,
//!     `get_http_session`; `src/connectors/tls/rustls/mod.rs`, `connect`.
//!     Tests: tests/integration/upstream_tls.rs; `net::upstream::peer`
//!     unit tests.
//! 27. An HTTP/2 request to a server takes its `:authority` from the
//!     target's authority, else from `Host`, and Pingora refuses the two
//!     when they differ; fulcrum sends every request in origin-form with
//!     the Host it chose (`proxy::headers`). Pingora:
//!     `src/protocols/http/v2/client.rs`, `sanitize_request_header`.
//!     Tests: tests/integration/upstream_tls.rs (Host as sent),
//!     tests/integration/grpc.rs.
//! 28. Pingora's rustls listener and connector install ring as rustls's
//!     process-wide provider only when none is installed, and the
//!     connector builds its client config from that default: fulcrum
//!     installs aws-lc-rs first (`config::tls::install_crypto_provider`),
//!     so upstream TLS and health checks use it and offer X25519MLKEM768.
//!     Pingora: pingora-rustls `src/lib.rs`,
//!     `install_default_crypto_provider`; `src/connectors/tls/rustls/mod.rs`,
//!     `TlsConnector::build_connector`. Test: tests/integration/upstream_tls.rs
//!     (`upstream_tls_offers_the_post_quantum_key_exchange`).
//!
//! ## The queue
//!
//! 29. While a request waits in its pool's queue (before Pingora proxies
//!     it), `downstream::gone` watches its client: when the body is done,
//!     with `read_body_or_idle(true)`, which fails on a close or reset and,
//!     pipelining on, stashes a next request's first byte for the next
//!     session and stays pending (so the proxy's own later idle reads do
//!     not read again); else by polling the socket for `POLLRDHUP`, found
//!     through the stream's `UniqueID`, which is its file descriptor
//!     (`ClientSocket`, and Pingora's own `Stream` with `work_stealing`).
//!     Pingora: `src/protocols/http/v1/server.rs`, `read_body_or_idle`;
//!     `src/protocols/l4/stream.rs`, `UniqueID for Stream`. Not in-process:
//!     tests/integration/queue.rs
//!     (`a_client_that_disconnects_leaves_the_queue_at_once`, both ways;
//!     `a_request_pipelined_behind_a_queued_one_is_answered_after_it`).
//!
//! ## HTTP/2 clients, HTTP/1.1 servers
//!
//! 30. Pingora passes an HTTP/2 client's empty last DATA frame to the
//!     request body filter as an empty chunk with `end_of_stream`, and
//!     its HTTP/1.1 chunked writer writes an empty chunk as `0\r\n\r\n`
//!     (the last chunk) before it finishes the body with another one; the
//!     proxy's body filter turns that chunk into none. Pingora:
//!     `pingora-proxy/src/proxy_h1.rs`, `send_body_to_pipe`;
//!     `src/protocols/http/v1/body.rs`, `do_write_chunked_body`. Test:
//!     tests/integration/conformance_h2.rs.
//! 31. Pingora decides `Transfer-Encoding: chunked` for an HTTP/1.x
//!     client before the response filter when the server is HTTP/1.x (so
//!     the filter takes it away again for an HTTP/1.0 client,
//!     `proxy::headers::unchunk_for_http10`), but after it when the server
//!     is HTTP/2: through `h2`/`h2c` pools an HTTP/1.0 client still gets
//!     chunked (docs/behaviour.md). Pingora: `pingora-proxy/src/proxy_h1.rs`
//!     and `proxy_h2.rs`, `h1_response_filter`/`h2_response_filter`. Test:
//!     tests/integration/conformance (`HTTP/1.0 request answered chunked`,
//!     `HTTP/1.0 keep-alive request answered chunked`).

pub mod downstream;
pub mod upstream;
pub mod workers;
