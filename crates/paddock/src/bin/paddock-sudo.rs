//! The `sudo` shim, bind-mounted into every sandbox as `/opt/paddock/bin/sudo` (and over a
//! template's own `sudo`). It only ever runs inside a sandbox: its ELF interpreter and library
//! path point at the agent's private glibc under `/opt/paddock/lib` (see `build.rs`), so it
//! works in images without glibc (Alpine, busybox) or with an older one. All logic lives in
//! the `paddock-agent` crate.

fn main() {
    paddock_agent::sudo::client_main()
}
