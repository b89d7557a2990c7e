//! Paddock's API server.
