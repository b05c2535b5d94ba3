//! Pingora's own keys: the part of the document that Pingora's `ServerConf`
//! reads, checked as Pingora would check it when the process starts.

use super::Checker;
use crate::config::file::{parse_section, OWN_KEYS};
use crate::config::pingora_keys::{is_pingora_key, rejection};
use pingora::server::configuration::ServerConf;
use serde_yaml::{Mapping, Value};

/// Pingora's settings from the document `map`, or `None` after reporting
/// why not. Rejected keys are reported with the other top-level keys and
/// left out here.
pub(super) fn server_conf(c: &mut Checker, map: &Mapping) -> Option<ServerConf> {
    let server =
        parse_section::<ServerConf>(&pingora_part(map), "(pingora settings)", &mut c.errors);
    // One runtime per thread unless the file asks for work stealing: measured
    // 13-20% less CPU per proxied request (deploy/bench), and connections stay
    // on the thread that accepted them, like nginx's workers.
    let server = server.map(|mut s| {
        if !map.contains_key("work_stealing") {
            s.work_stealing = false;
        }
        s
    });
    let server = server.and_then(|s| match s.validate() {
        Ok(s) => Some(s),
        Err(e) => {
            c.err("(pingora settings)", e);
            None
        }
    });
    // Pingora switches to these when it daemonizes; a missing account
    // would only show then, as a panic.
    if let Some(s) = &server {
        let user = s.user.as_deref().map(crate::config::accounts::lookup_user);
        let group = s
            .group
            .as_deref()
            .map(crate::config::accounts::lookup_group);
        for e in [user.and_then(Result::err), group.and_then(Result::err)]
            .into_iter()
            .flatten()
        {
            let (field, why) = e.split_once(": ").unwrap_or(("(pingora settings)", &e));
            c.err(field, why);
        }
    }
    server
}

/// The subset of the document that Pingora reads: its keys that fulcrum
/// does not reject.
fn pingora_part(map: &Mapping) -> Value {
    let mut out = Mapping::new();
    for (k, v) in map {
        // `error_log` is Pingora's key too, but fulcrum writes the error
        // log itself (lifecycle/error_log.rs), reopens it on SIGUSR1 and
        // takes a mapping there that Pingora could not parse.
        if k.as_str().is_some_and(|k| {
            is_pingora_key(k) && rejection(k, map).is_none() && !OWN_KEYS.contains(&k)
        }) {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Mapping(out)
}
