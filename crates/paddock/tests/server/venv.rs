//! Python venvs for the suites that drive the server with a pinned Python SDK (E2B, MCP):
//! each lives outside the repository under `/var/tmp`, made with `python3 -m venv` (the host
//! needs `python3-venv`) and rebuilt only when its `requirements.txt` changes (a hash of that
//! file and of the Python version is kept inside the venv). Installing needs PyPI.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Inside the venv: the hash of the requirements it was built from.
const HASH_FILE: &str = "paddock-requirements.hash";

/// FNV-1a, 64 bit: enough to notice that the requirements changed.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Makes the venv `venv`, or brings it up to date with `requirements.txt` of the suite in
/// `dir`; returns its python.
pub fn prepare_venv(venv_dir: &'static str, dir: &Path) -> PathBuf {
    let venv = Path::new(venv_dir);
    let python = venv.join("bin/python");
    let requirements = dir.join("requirements.txt");
    let python_version = Command::new("python3")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("the Python suites need python3 on PATH: {e}"));
    let mut hashed = std::fs::read(&requirements).expect("reading requirements.txt");
    hashed.extend_from_slice(&python_version.stdout);
    let want = format!("{:016x}\n", fnv1a(&hashed));

    // Two test runs at once must not build the same venv together.
    let lock = File::create(format!("{venv_dir}.lock")).expect("venv lock file");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("locking the venv");

    if python.exists() && std::fs::read_to_string(venv.join(HASH_FILE)).ok() == Some(want.clone()) {
        return python;
    }
    eprintln!("preparing {venv_dir} from {}", requirements.display());
    let out = Command::new("python3")
        .args(["-m", "venv", "--clear", venv_dir])
        .output()
        .expect("running python3 -m venv");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if format!("{stdout}{stderr}").contains("ensurepip") {
            panic!(
                "python3 -m venv failed: ensurepip is not available. Install the venv module \
                 (Debian/Ubuntu: apt-get install python3-venv) and run again.\n{stdout}{stderr}"
            );
        }
        panic!(
            "python3 -m venv {venv_dir} failed ({}):\n{stdout}{stderr}",
            out.status
        );
    }
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements),
        &format!("pip install -r {}", requirements.display()),
    );
    std::fs::write(venv.join(HASH_FILE), &want).expect("writing the requirements hash");
    python
}
