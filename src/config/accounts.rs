//! Looking up the `user` and `group` accounts named in the config: `-t`
//! reports a missing one (Pingora would only panic on it when it
//! daemonizes), and lifecycle::privileges switches to them.

use nix::unistd::{Group, User};

/// The uid of `name`, or why not.
pub(crate) fn lookup_user(name: &str) -> Result<u32, String> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!("user: no such user {name:?}")),
        Err(e) => Err(format!("user: cannot look up {name:?}: {e}")),
    }
}

/// The gid of `name`, or why not.
pub(crate) fn lookup_group(name: &str) -> Result<u32, String> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("group: no such group {name:?}")),
        Err(e) => Err(format!("group: cannot look up {name:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_looked_up() {
        assert_eq!(lookup_user("root"), Ok(0));
        assert_eq!(lookup_group("root"), Ok(0));
        let err = lookup_user("no-such-user-fulcrum").unwrap_err();
        assert_eq!(err, "user: no such user \"no-such-user-fulcrum\"");
        assert!(lookup_group("no-such-group-fulcrum").is_err());
    }
}
