//! Paddock's API server.

pub mod testrun;
