//! Path normalization and prefix routing agree with the reference model in
//! tests/integration/common/route_model.rs and keep its invariants. Input: one route
//! prefix per line (`!` first asks for strip_prefix), the last line is the path.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../integration/common/route_model.rs"]
mod route_model;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (routes, path) = route_model::from_text(text);
    if let Err(e) = route_model::check(&routes, &path) {
        panic!("{e}");
    }
});
