//! The config loader and validation never panic, whatever the input, and
//! every error they report names a field path (`path: message`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Some variables are set (to their own name), others are not.
    let lookup = |name: &str| (name.len() % 2 == 0).then(|| format!("127.0.0.{}", name.len()));
    if let Err(e) = fulcrum::config::from_str(text, &lookup) {
        assert!(!e.0.is_empty(), "an error without a message");
        for line in &e.0 {
            assert!(line.contains(": "), "error without a field path: {line:?}");
        }
    }
});
