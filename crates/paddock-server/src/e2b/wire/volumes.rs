//! The bodies of the E2B volume control API (`super::super::volumes`) and volume content
//! API (`super::super::volume_content`): a volume, an entry, the content API's error.

use paddock_runtime::volfs::{Entry, EntryKind};
use serde::Serialize;

/// The volume content API's error body: its codes are strings (`not_found`, `conflict`, ...).
#[derive(Debug, Serialize)]
pub(in crate::e2b) struct ContentErrorBody<'a> {
    pub code: &'static str,
    pub message: &'a str,
}

/// An E2B volume: `{"volumeID", "name"}`, with the content API's `token` from create and get.
#[derive(Debug, Serialize)]
pub(in crate::e2b) struct VolumeBody {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(rename = "volumeID")]
    pub volume_id: String,
}

/// A volume entry's type.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub(in crate::e2b) enum EntryType {
    Directory,
    File,
    Symlink,
    Unknown,
}

impl From<EntryKind> for EntryType {
    fn from(k: EntryKind) -> EntryType {
        match k {
            EntryKind::Directory => EntryType::Directory,
            EntryKind::File => EntryType::File,
            EntryKind::Symlink => EntryType::Symlink,
            EntryKind::Unknown => EntryType::Unknown,
        }
    }
}

/// An entry of the volume content API.
#[derive(Debug, Serialize)]
pub(in crate::e2b) struct VolumeEntry {
    /// RFC 3339 with the nanoseconds the file system keeps.
    atime: String,
    ctime: String,
    gid: u32,
    /// Permission bits.
    mode: u32,
    mtime: String,
    name: String,
    /// From the volume's root, starting with `/`.
    path: String,
    size: u64,
    /// A symlink's target, as stored; absent for everything else.
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(rename = "type")]
    kind: EntryType,
    uid: u32,
}

impl From<&Entry> for VolumeEntry {
    fn from(e: &Entry) -> VolumeEntry {
        VolumeEntry {
            atime: secs(e.atime),
            ctime: secs(e.ctime),
            gid: e.gid,
            mode: e.mode,
            mtime: secs(e.mtime),
            name: e.name.clone(),
            path: e.path.clone(),
            size: e.size,
            target: e.target.clone(),
            kind: e.kind.into(),
            uid: e.uid,
        }
    }
}

/// Seconds and nanoseconds since the epoch as RFC 3339 (the epoch if out of range).
fn secs(t: (i64, u32)) -> String {
    let ts = time::OffsetDateTime::from_unix_timestamp(t.0)
        .map(|d| d + time::Duration::nanoseconds(i64::from(t.1)))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    ts.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// The bytes a body goes out as (through `serde_json::Value`).
    fn wire<T: Serialize>(t: &T) -> String {
        serde_json::to_value(t).unwrap().to_string()
    }

    /// A volume with and without its token, and the content API's error, are the `json!`
    /// bodies they replaced.
    #[test]
    fn volumes_and_content_errors_serialise_as_before() {
        let with_token = VolumeBody {
            name: "data".into(),
            token: Some("vt".into()),
            volume_id: "vol-1".into(),
        };
        assert_eq!(
            wire(&with_token),
            json!({ "volumeID": "vol-1", "name": "data", "token": "vt" }).to_string()
        );
        let listed = VolumeBody {
            token: None,
            ..with_token
        };
        assert_eq!(
            wire(&listed),
            json!({ "volumeID": "vol-1", "name": "data" }).to_string()
        );
        assert_eq!(
            wire(&ContentErrorBody {
                code: "not_found",
                message: "no /x",
            }),
            json!({"code": "not_found", "message": "no /x"}).to_string()
        );
    }

    /// What `volume_content::secs` built.
    fn old_secs(t: (i64, u32)) -> Value {
        let ts = time::OffsetDateTime::from_unix_timestamp(t.0)
            .map(|d| d + time::Duration::nanoseconds(i64::from(t.1)))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        Value::String(
            ts.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        )
    }

    /// What `volume_content::entry_json` built.
    fn old_entry_json(e: &Entry) -> Value {
        let mut v = json!({
            "name": e.name,
            "type": e.kind.as_str(),
            "path": e.path,
            "size": e.size,
            "mode": e.mode,
            "uid": e.uid,
            "gid": e.gid,
            "atime": old_secs(e.atime),
            "mtime": old_secs(e.mtime),
            "ctime": old_secs(e.ctime),
        });
        if let Some(t) = &e.target {
            v["target"] = Value::String(t.clone());
        }
        v
    }

    /// A volume entry of every type is the `json!` body it replaced: `target` only for a
    /// symlink, times with nanoseconds, an out-of-range time as the epoch.
    #[test]
    fn volume_entries_serialise_as_before() {
        for kind in [
            EntryKind::Directory,
            EntryKind::File,
            EntryKind::Symlink,
            EntryKind::Unknown,
        ] {
            let e = Entry {
                name: "a.txt".into(),
                path: "/d/a.txt".into(),
                kind,
                size: 12,
                mode: 0o644,
                uid: 1000,
                gid: 1000,
                atime: (1_700_000_000, 5),
                mtime: (1_700_000_001, 0),
                ctime: (i64::MAX, 0),
                target: (kind == EntryKind::Symlink).then(|| "../b".to_owned()),
            };
            assert_eq!(wire(&VolumeEntry::from(&e)), old_entry_json(&e).to_string());
        }
    }
}
