//! Support code of the differential conformance suite (tests/conformance.rs).

pub mod case;
pub mod client;
pub mod compare;
pub mod nginx;
pub mod requests;
pub mod responses;
pub mod upstream;
pub mod wire;
