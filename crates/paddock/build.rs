//! Link settings of the in-sandbox binaries, `paddock-agent` and `paddock-sudo`.
//!
//! The agent is linked at a fixed address (`-no-pie`). It is PID 1 of every sandbox; as a
//! position-independent executable each copy was loaded at its own address, so the dynamic
//! loader rewrote its pointer tables (`.data.rel.ro`, `.got`: tens of thousands of
//! relative relocations, twice per create, for the setup stage and for PID 1) and every
//! idle sandbox held a private copy of those pages (about 0.8 MiB in a dev build). At a
//! fixed address they are the executable's file pages, shared by every sandbox, and the
//! loader has a few hundred relocations left. The cost: the agent's own code and data are
//! at the same, known addresses in every sandbox (its libraries, heap, stacks and
//! mappings stay randomised); `docs/isolation.md` says so.
//!
//! `paddock-sudo` is executed inside sandboxes, whose images may have no glibc (Alpine,
//! busybox) or an older one than the host's. The runtime copies it into the agent's library bundle with its
//! ELF interpreter rewritten to the bundled loader (`paddock_runtime::agentlib`); here it gets
//! that bundle's directory as its `DT_RPATH` (not `DT_RUNPATH`, which `LD_LIBRARY_PATH` would
//! override), so inside a sandbox it finds the bundle's libraries before any of the image's.
//! On the host that directory does not exist and the binary runs as any other.
//!
//! The shim's debug info is stripped at link time: the runtime copies the shim into the bundle of
//! every data directory, and a debug build's would be about 150 MB (the agent crate's
//! dependencies), against about 2.5 MB stripped.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        for arg in [
            "-Wl,-rpath,/opt/paddock/lib",
            "-Wl,--disable-new-dtags",
            "-Wl,--strip-debug",
        ] {
            println!("cargo:rustc-link-arg-bin=paddock-sudo={arg}");
        }
        println!("cargo:rustc-link-arg-bin=paddock-agent=-no-pie");
    }
}
