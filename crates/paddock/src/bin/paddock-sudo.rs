//! The `sudo` shim, bind-mounted into every sandbox as `/opt/paddock/bin/sudo` (and over a
//! template's own `sudo`). The copy in sandboxes is the runtime's, from the agent's library
//! bundle, with its ELF interpreter rewritten to the bundle's loader; with the bundle as its
//! library path (see `build.rs`) it runs on the agent's private glibc under
//! `/opt/paddock/lib`, so it works in images without glibc (Alpine, busybox) or with an older
//! one. All logic lives in the `paddock-agent` crate.

fn main() {
    paddock_agent::sudo::client_main()
}
