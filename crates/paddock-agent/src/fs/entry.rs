//! Entry information: what `Stat` and `ListDir` report for a path.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use buffa::MessageField;
use buffa_types::google::protobuf::Timestamp;
use paddock_envd::filesystem::*;

use super::metadata::read_metadata;
use crate::users;

/// Owner and group names looked up once per request rather than once per entry.
#[derive(Default)]
pub(super) struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| users::name_of(uid, false))
            .clone()
    }

    fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| users::name_of(gid, true))
            .clone()
    }
}

/// `permissions` as Go's `FileMode.String()` prints it (what envd sends): one letter per
/// set type or special bit in the order `dalTLDpSugct?` (or `-` if none), then `rwxrwxrwx`.
pub(crate) fn permissions_string(st_mode: u32) -> String {
    let fmt = st_mode & libc::S_IFMT;
    let mut s = String::with_capacity(12);
    // Go's flags in its output order; Append, Exclusive and Temporary have no Unix
    // equivalent and are never set from a stat result.
    let flags = [
        ('d', fmt == libc::S_IFDIR),
        ('L', fmt == libc::S_IFLNK),
        ('D', fmt == libc::S_IFBLK || fmt == libc::S_IFCHR),
        ('p', fmt == libc::S_IFIFO),
        ('S', fmt == libc::S_IFSOCK),
        ('u', st_mode & libc::S_ISUID != 0),
        ('g', st_mode & libc::S_ISGID != 0),
        ('c', fmt == libc::S_IFCHR),
        ('t', st_mode & libc::S_ISVTX != 0),
    ];
    for (c, set) in flags {
        if set {
            s.push(c);
        }
    }
    if s.is_empty() {
        s.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if st_mode & (1 << (8 - i)) != 0 {
            c
        } else {
            '-'
        });
    }
    s
}

fn file_type(meta: &std::fs::Metadata) -> FileType {
    if meta.is_dir() {
        FileType::FILE_TYPE_DIRECTORY
    } else if meta.is_file() {
        FileType::FILE_TYPE_FILE
    } else {
        FileType::FILE_TYPE_UNSPECIFIED
    }
}

pub(super) fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Builds the entry for `path` from its `lstat` result.
pub(super) fn entry_from_meta(
    path: &Path,
    meta: &std::fs::Metadata,
    names: &mut Names,
) -> EntryInfo {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".to_owned());
    let mut e = EntryInfo {
        name,
        path: lossy(path),
        size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
        permissions: permissions_string(meta.mode()),
        owner: names.user(meta.uid()),
        group: names.group(meta.gid()),
        modified_time: MessageField::some(Timestamp::from_unix(
            meta.mtime(),
            i32::try_from(meta.mtime_nsec()).unwrap_or(0),
        )),
        ..Default::default()
    };
    if meta.file_type().is_symlink() {
        e.is_symlink = true;
        match std::fs::canonicalize(path) {
            Ok(target) => {
                if let Ok(t) = std::fs::metadata(&target) {
                    e.r#type = file_type(&t).into();
                    e.mode = t.mode() & 0o777;
                }
                e.symlink_target = Some(lossy(&target));
            }
            // A dangling or looping link: report what it says.
            Err(_) => e.symlink_target = std::fs::read_link(path).ok().map(|t| lossy(&t)),
        }
    } else {
        e.r#type = file_type(meta).into();
        e.mode = meta.mode() & 0o777;
    }
    e.metadata = read_metadata(path).into_iter().collect();
    e
}

pub(super) fn entry_info(path: &Path, names: &mut Names) -> io::Result<EntryInfo> {
    let meta = std::fs::symlink_metadata(path)?;
    Ok(entry_from_meta(path, &meta, names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::tempdir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn permissions_like_go() {
        assert_eq!(permissions_string(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(permissions_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(permissions_string(libc::S_IFLNK | 0o777), "Lrwxrwxrwx");
        assert_eq!(permissions_string(libc::S_IFDIR | 0o1777), "dtrwxrwxrwx");
        assert_eq!(permissions_string(libc::S_IFCHR | 0o666), "Dcrw-rw-rw-");
        assert_eq!(permissions_string(libc::S_IFIFO | 0o600), "prw-------");
        assert_eq!(permissions_string(libc::S_IFREG | 0o4755), "urwxr-xr-x");
        assert_eq!(permissions_string(libc::S_IFREG), "----------");
    }

    #[test]
    fn entry_mode_and_permissions() {
        let d = tempdir("entry");
        let f = d.join("f.txt");
        std::fs::write(&f, b"abcd").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = entry_info(&f, &mut Names::default()).expect("entry");
        assert_eq!(e.mode, 420);
        assert_eq!(e.permissions, "-rw-r--r--");
        assert_eq!(e.name, "f.txt");
        assert_eq!(e.size, 4);
        let root = entry_info(Path::new("/"), &mut Names::default()).expect("root");
        assert_eq!(root.name, "/");
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
