//! The `paddock` binary.

fn main() {}
