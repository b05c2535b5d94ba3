//! Bytes in and out: client connections (`downstream`) and connections to
//! servers (`upstream`), and the worker threads that run them.

pub mod downstream;
pub mod upstream;
pub mod workers;
