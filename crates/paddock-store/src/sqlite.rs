//! SQLite implementation of [`crate::Store`] (being written).

/// The embedded store.
#[derive(Debug)]
pub struct SqliteStore;
