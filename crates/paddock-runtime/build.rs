//! Builds `gvisor-compat/compat.rs` into `libpaddock-gvisor-compat.so` in `OUT_DIR`, which
//! `runtime::gvisor` embeds and preloads into gVisor sandboxes (see that file's doc).
//!
//! It is compiled with the same `rustc` as this crate, as a `no_std` cdylib with
//! `panic=abort` (a cdylib of this workspace's profile would unwind and need std), for the
//! same target. Only linux-gnu targets get it; elsewhere an empty file is written and the
//! runtime preloads nothing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "gvisor-compat/compat.rs";
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"))
        .join("libpaddock-gvisor-compat.so");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os != "linux" || env != "gnu" || !matches!(arch.as_str(), "x86_64" | "aarch64") {
        std::fs::write(&out, b"").expect("writing an empty compat library");
        return;
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("TARGET");
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "cdylib",
            "--crate-name",
            "paddock_gvisor_compat",
            "-C",
            "panic=abort",
            "-C",
            "opt-level=2",
            "-C",
            "strip=symbols",
            "--target",
            &target,
            src,
            "-o",
        ])
        .arg(&out)
        .status()
        .expect("running rustc for the gVisor compat library");
    assert!(status.success(), "building {src} failed ({status})");
}
