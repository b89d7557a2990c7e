//! The gVisor backend (`docs/isolation.md`): real sandboxes under `runsc` with the real agent.
//! Skips (loudly) where `runsc` is not installed; CI installs it.

mod common;

use common::*;
use paddock_core::Isolation;
use paddock_runtime::CreateSpec;

fn gvisor() -> CreateSpec {
    CreateSpec {
        isolation: Isolation::Gvisor,
        ..Default::default()
    }
}

/// Whether runsc is here; prints why the test does nothing otherwise.
fn have_runsc() -> bool {
    let ok = runtime().gvisor_available();
    if !ok {
        eprintln!("SKIP: runsc is not installed (apt-get install runsc)");
        assert!(std::env::var_os("CI").is_none(), "CI must have runsc");
    }
    ok
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_files_and_teardown() {
    if !have_runsc() {
        return;
    }
    let s = create(gvisor()).await;
    for argv in [
        vec!["/usr/bin/true"],
        vec!["/opt/paddock/lib/ld.so", "--version"],
    ] {
        let r = s
            .exec(paddock_runtime::ExecRequest {
                argv: argv.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            })
            .await;
        eprintln!("{argv:?}: {r:?}");
    }
    eprintln!(
        "LOG {}",
        std::fs::read_to_string(s.dir.join("agent.log")).unwrap_or_default()
    );
    let r = sh(
        &s,
        "echo hi; id -u; uname -r; cat /proc/1/cmdline | tr '\\0' ' '",
    )
    .await;
    eprintln!("{}{}", out(&r), err(&r));
    assert_eq!(r.exit_code, Some(0), "{}", err(&r));
    destroy(&s).await;
}
