//! Link settings of the in-sandbox `paddock-sudo` binary.
//!
//! It is executed by the kernel inside sandboxes, whose images may have no glibc (Alpine,
//! busybox) or an older one than the host's. So its ELF interpreter is the host's loader as the
//! runtime bundles it at `/opt/paddock/lib/ld.so` in every sandbox, and its libraries are
//! looked up in that directory only (`-z nodefaultlib`): never a mix of the image's libraries
//! with ours. It is never run on the host.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        for arg in [
            "-Wl,--dynamic-linker=/opt/paddock/lib/ld.so",
            "-Wl,-rpath,/opt/paddock/lib",
            "-Wl,-z,nodefaultlib",
        ] {
            println!("cargo:rustc-link-arg-bin=paddock-sudo={arg}");
        }
    }
}
