//! Host side of the native isolation backend.
