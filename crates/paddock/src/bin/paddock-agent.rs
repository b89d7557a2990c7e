//! The in-sandbox agent binary; all logic lives in the `paddock-agent` crate.

fn main() {
    paddock_agent::main()
}
