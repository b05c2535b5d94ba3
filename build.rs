//! Build facts for `fulcrum -V`: the git commit, the Pingora version from
//! Cargo.lock, the build profile, and whether the build was profile-guided
//! (deploy/build-pgo.sh passes `-Cprofile-use` in RUSTFLAGS).

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let pingora = std::fs::read_to_string("Cargo.lock")
        .ok()
        .and_then(|lock| {
            let at = lock.find("name = \"pingora-core\"")?;
            let rest = &lock[at..];
            let v = rest.lines().nth(1)?.strip_prefix("version = \"")?;
            Some(v.trim_end_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let pgo = if flags.contains("profile-use") {
        "yes"
    } else {
        "no"
    };
    println!("cargo:rustc-env=FULCRUM_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=FULCRUM_PINGORA_VERSION={pingora}");
    println!("cargo:rustc-env=FULCRUM_BUILD_PROFILE={profile}");
    println!("cargo:rustc-env=FULCRUM_PGO={pgo}");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
}
