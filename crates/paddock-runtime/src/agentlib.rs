//! The agent's private C library: the host's dynamic loader and the shared libraries the
//! agent links against, copied once into `<data>/agent-lib/<digest>/` and bound read-only at
//! [`AGENT_LIB_DIR`] in every sandbox.
//!
//! The agent and the `sudo` shim are dynamically linked against the host's glibc. A template
//! may have no glibc at all (Alpine and busybox images use musl or nothing) or an older one
//! than the agent needs (an Ubuntu 20.04 image against a newer host). So neither uses the
//! image's libraries: PID 1 is started through the bundled loader with the bundle as its only
//! library path, and the bundle holds a copy of the `sudo` shim whose ELF interpreter is
//! rewritten to the bundled loader (the shim is linked with the bundle as its `DT_RPATH`,
//! `crates/paddock/build.rs`, so it finds the bundle's libraries first; on the host, where
//! that directory does not exist, the original runs as any program). The image's own programs
//! are untouched.
//!
//! Invariants:
//! - A bundle directory is written under a temporary name and renamed into place, and never
//!   changed afterwards: sandboxes started from it keep it bound, so a new bundle (after a host
//!   glibc upgrade, a rebuilt shim) gets a new directory, and old ones stay until a start
//!   finds no sandbox on its data directory ([`remove_others`]).
//! - Files in the bundle belong to host root, which is unmapped in every sandbox: a sandbox
//!   can read and execute them, never write them.
//! - A statically linked agent (no ELF interpreter) needs no bundle and runs directly.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::read::elf::{FileHeader as _, ProgramHeader as _};
use sha2::{Digest, Sha256};

use crate::{Result, RuntimeError};

pub use paddock_core::{AGENT_LIB_DIR, AGENT_LOADER as LOADER, AGENT_MOUNTPOINT, AGENT_SUDO};

/// The ELF interpreter (`PT_INTERP`) of `bin`, or None for a static executable.
///
/// Reads only the ELF header, the program headers and the interpreter string, through a
/// read cache: a debug agent is over 100 MB.
pub fn elf_interpreter(bin: &Path) -> Result<Option<PathBuf>> {
    let bad = |e: object::Error| RuntimeError::Io {
        what: format!("reading ELF headers of {}", bin.display()),
        source: std::io::Error::other(e.to_string()),
    };
    let file =
        fs::File::open(bin).map_err(RuntimeError::io(format!("opening {}", bin.display())))?;
    let cache = object::ReadCache::new(file);
    let hdr = object::elf::FileHeader64::<object::Endianness>::parse(&cache).map_err(bad)?;
    let endian = hdr.endian().map_err(bad)?;
    for ph in hdr.program_headers(endian, &cache).map_err(bad)? {
        if let Some(interp) = ph.interpreter(endian, &cache).map_err(bad)? {
            return Ok(Some(PathBuf::from(OsStr::from_bytes(interp))));
        }
    }
    Ok(None)
}

/// Rewrites the ELF interpreter (`PT_INTERP`) of the executable in `elf` to `interp`, in
/// place: the new path, NUL-padded, must fit in the old one's space (the bundle's path is
/// shorter than any glibc loader path). Hand-written: no maintained crate edits ELF program
/// data in place, and this is one string overwrite once the header is found.
pub fn set_interpreter(elf: &mut [u8], interp: &str) -> Result<()> {
    let bad = |why: String| RuntimeError::Unsupported {
        resource: "agent binary",
        reason: format!("cannot set the ELF interpreter: {why}"),
    };
    let (offset, size) = {
        let hdr = object::elf::FileHeader64::<object::Endianness>::parse(&*elf)
            .map_err(|e| bad(e.to_string()))?;
        let endian = hdr.endian().map_err(|e| bad(e.to_string()))?;
        let ph = hdr
            .program_headers(endian, &*elf)
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .find(|ph| ph.p_type(endian) == object::elf::PT_INTERP)
            .ok_or_else(|| bad("the executable is static".into()))?;
        (
            usize::try_from(ph.p_offset(endian)).map_err(|e| bad(e.to_string()))?,
            usize::try_from(ph.p_filesz(endian)).map_err(|e| bad(e.to_string()))?,
        )
    };
    if interp.len() + 1 > size {
        return Err(bad(format!(
            "{interp} is longer than the {} bytes the executable has for it",
            size.saturating_sub(1)
        )));
    }
    let slot = elf
        .get_mut(offset..offset + size)
        .ok_or_else(|| bad("PT_INTERP lies outside the file".into()))?;
    slot.fill(0);
    slot[..interp.len()].copy_from_slice(interp.as_bytes());
    Ok(())
}

/// The shared libraries `bin` loads, as (soname, host path), resolved by `loader` itself
/// (`ld.so --list`), so the search order is exactly the loader's.
fn needed_libraries(loader: &Path, bin: &Path) -> Result<Vec<(String, PathBuf)>> {
    let out = Command::new(loader)
        .arg("--list")
        .arg(bin)
        .env_clear()
        .output()
        .map_err(RuntimeError::io(format!(
            "running {} --list",
            loader.display()
        )))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(RuntimeError::Unsupported {
            resource: "dynamic loader",
            reason: format!(
                "{} --list {} failed: {}{}",
                loader.display(),
                bin.display(),
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)"; the vdso and the loader
        // itself have no "=>".
        let Some((name, rest)) = line.trim().split_once(" => ") else {
            continue;
        };
        let path = rest.split(" (").next().unwrap_or("").trim();
        if path.is_empty() || path == "not found" {
            return Err(RuntimeError::Unsupported {
                resource: "dynamic loader",
                reason: format!("the agent needs {name}, which the host's loader cannot find"),
            });
        }
        libs.push((name.to_owned(), PathBuf::from(path)));
    }
    Ok(libs)
}

/// Makes sure the bundle for `agent` and the `sudo` shim `sudo` exists under `data_dir` and
/// returns its host directory, or None when the agent is statically linked.
pub fn prepare(data_dir: &Path, agent: &Path, sudo: &Path) -> Result<Option<PathBuf>> {
    let Some(interp) = elf_interpreter(agent)? else {
        return Ok(None);
    };
    let mut files: Vec<(String, PathBuf)> = vec![(LOADER.to_owned(), interp.clone())];
    files.extend(needed_libraries(&interp, agent)?);
    files.extend(needed_libraries(&interp, sudo)?);
    // The loader under its own soname too: the shim lists it as a needed library.
    if let Some(n) = interp.file_name().and_then(OsStr::to_str)
        && n != LOADER
    {
        files.push((n.to_owned(), interp.clone()));
    }
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    let mut contents = Vec::with_capacity(files.len());
    let mut digest = Sha256::new();
    for (name, path) in &files {
        let bytes =
            fs::read(path).map_err(RuntimeError::io(format!("reading {}", path.display())))?;
        digest.update(name.as_bytes());
        digest.update([0]);
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(&bytes);
        contents.push((name.clone(), bytes));
    }
    let mut shim =
        fs::read(sudo).map_err(RuntimeError::io(format!("reading {}", sudo.display())))?;
    set_interpreter(&mut shim, &format!("{AGENT_LIB_DIR}/{LOADER}"))?;
    digest.update(AGENT_SUDO.as_bytes());
    digest.update([0]);
    digest.update(&shim);
    contents.push((AGENT_SUDO.to_owned(), shim));
    let hex: String = digest.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let parent = data_dir.join("agent-lib");
    let dir = parent.join(&hex);
    if dir.join(AGENT_MOUNTPOINT).is_file() {
        return Ok(Some(dir));
    }
    fs::create_dir_all(&parent).map_err(RuntimeError::io("creating agent-lib dir"))?;
    let tmp = parent.join(format!(".tmp-{hex}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir(&tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        for (name, bytes) in &contents {
            let p = tmp.join(name);
            fs::write(&p, bytes)?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
        }
        fs::write(tmp.join(AGENT_MOUNTPOINT), b"")?;
        fs::set_permissions(
            tmp.join(AGENT_MOUNTPOINT),
            fs::Permissions::from_mode(0o755),
        )?;
        fs::rename(&tmp, &dir)
    };
    if let Err(e) = write() {
        let _ = fs::remove_dir_all(&tmp);
        // Another runtime on the same data dir may have renamed the same bundle first.
        if !dir.join(AGENT_MOUNTPOINT).is_file() {
            return Err(RuntimeError::Io {
                what: format!("writing the agent's library bundle {}", dir.display()),
                source: e,
            });
        }
    }
    Ok(Some(dir))
}

/// Removes every finished bundle under `data_dir` but `keep`. Only for when no sandbox of
/// this data directory exists (a running one may have an older bundle bound); bundles being
/// written (temporary names) are left alone.
pub fn remove_others(data_dir: &Path, keep: &Path) {
    for e in fs::read_dir(data_dir.join("agent-lib"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path();
        if p == keep || e.file_name().as_bytes().starts_with(b".") {
            continue;
        }
        if let Err(err) = fs::remove_dir_all(&p) {
            tracing::warn!(path = %p.display(), %err, "cannot remove an old agent library bundle");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_the_loader_and_libraries_of_a_dynamic_binary() {
        let exe = std::env::current_exe().unwrap();
        let interp = elf_interpreter(&exe)
            .unwrap()
            .expect("test binary is dynamic");
        assert!(interp.is_absolute());
        let data = tempfile::tempdir().unwrap();
        // Any dynamic executable stands in for the shim.
        let shim = Path::new("/bin/true");
        let dir = prepare(data.path(), &exe, shim).unwrap().unwrap();
        assert!(dir.join(LOADER).is_file());
        assert!(dir.join("libc.so.6").is_file());
        assert!(dir.join(AGENT_MOUNTPOINT).is_file());
        assert_eq!(
            elf_interpreter(&dir.join(AGENT_SUDO)).unwrap(),
            Some(Path::new(AGENT_LIB_DIR).join(LOADER))
        );
        // Unchanged inputs: the same directory, not a second copy.
        assert_eq!(prepare(data.path(), &exe, shim).unwrap().unwrap(), dir);
        assert_eq!(
            fs::read_dir(data.path().join("agent-lib")).unwrap().count(),
            1
        );
        // Another shim: another bundle; removing the others keeps only the one asked for and
        // bundles being written.
        let other = prepare(data.path(), &exe, Path::new("/bin/ls"))
            .unwrap()
            .unwrap();
        assert_ne!(other, dir);
        let writing = data.path().join("agent-lib/.tmp-x-1");
        fs::create_dir(&writing).unwrap();
        remove_others(data.path(), &other);
        assert!(other.is_dir() && writing.is_dir() && !dir.exists());
    }

    #[test]
    fn a_static_binary_needs_no_bundle() {
        // Debian's ldconfig is statically linked (static-pie).
        let ldconfig = Path::new("/sbin/ldconfig");
        assert_eq!(elf_interpreter(ldconfig).unwrap(), None);
        let data = tempfile::tempdir().unwrap();
        assert_eq!(prepare(data.path(), ldconfig, ldconfig).unwrap(), None);
    }

    #[test]
    fn the_interpreter_is_rewritten_in_place_or_refused() {
        let mut elf = fs::read("/bin/true").unwrap();
        let len = elf.len();
        set_interpreter(&mut elf, "/x/ld.so").unwrap();
        assert_eq!(elf.len(), len);
        let tmp = tempfile::NamedTempFile::new().unwrap();
        fs::write(tmp.path(), &elf).unwrap();
        assert_eq!(
            elf_interpreter(tmp.path()).unwrap(),
            Some(PathBuf::from("/x/ld.so"))
        );
        let long = format!("/{}", "x".repeat(200));
        let e = set_interpreter(&mut elf, &long).unwrap_err();
        assert!(e.to_string().contains("longer"), "{e}");
        let mut stat = fs::read("/sbin/ldconfig").unwrap();
        let e = set_interpreter(&mut stat, "/x/ld.so").unwrap_err();
        assert!(e.to_string().contains("static"), "{e}");
        assert!(set_interpreter(&mut b"not an elf".to_vec(), "/x").is_err());
    }
}
