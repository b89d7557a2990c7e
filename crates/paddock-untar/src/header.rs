//! Extension headers: GNU long names and links, pax records.

use std::io::Read;

use crate::{Error, Policy};

const PAX_XATTR: &[u8] = b"SCHILY.xattr.";

/// Extension headers seen before the entry they describe.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) long_name: Option<Vec<u8>>,
    pub(crate) long_link: Option<Vec<u8>>,
    pub(crate) pax_path: Option<Vec<u8>>,
    pub(crate) pax_link: Option<Vec<u8>>,
    pub(crate) pax_size: Option<u64>,
    pub(crate) pax_mtime: Option<i64>,
    pub(crate) pax_uid: Option<u32>,
    pub(crate) pax_gid: Option<u32>,
    /// Extended attributes the policy keeps, in archive order.
    pub(crate) xattrs: Vec<(String, Vec<u8>)>,
    /// Whether any extension header is pending (one must be followed by an entry).
    pub(crate) any: bool,
}

/// Reads an extension header's data, refusing more than `max` bytes.
pub(crate) fn read_extension<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    max: u64,
    what: &str,
) -> Result<Vec<u8>, Error> {
    let size = entry.size();
    if size > max {
        return Err(Error::Refused(format!(
            "{what} of {size} bytes exceeds the limit of {max} bytes"
        )));
    }
    let mut v = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut v).map_err(Error::Read)?;
    if v.len() as u64 != size {
        return Err(Error::Malformed("truncated".into()));
    }
    Ok(v)
}

/// A GNU long name or link: NUL-terminated.
pub(crate) fn until_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|b| *b == 0) {
        v.truncate(i);
    }
    v
}

/// Reads the records of a pax header that matter under `policy` into `p`. Owner records are
/// read only when the policy keeps owners, xattr records only when it reads xattrs; others
/// are ignored unread.
pub(crate) fn apply_pax(data: &[u8], p: &mut Pending, policy: Policy) -> Result<(), Error> {
    let bad = |why: &str| Error::Malformed(format!("pax header: {why}"));
    let num = |v: &[u8], what: &str| -> Result<u64, Error> {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad(&format!("invalid {what}")))
    };
    let id = |v: &[u8], what: &str| -> Result<u32, Error> {
        u32::try_from(num(v, what)?).map_err(|_| bad(&format!("invalid {what}")))
    };
    for rec in paddock_core::pax_records(data) {
        let (key, value) = rec.map_err(|_| bad("malformed record"))?;
        match key {
            b"path" => p.pax_path = Some(value.to_vec()),
            b"linkpath" => p.pax_link = Some(value.to_vec()),
            b"size" => p.pax_size = Some(num(value, "size")?),
            b"mtime" => {
                let s = std::str::from_utf8(value).map_err(|_| bad("invalid mtime"))?;
                let secs = s.split('.').next().unwrap_or("");
                p.pax_mtime = Some(if secs.is_empty() || secs == "-" {
                    0
                } else {
                    secs.parse::<i64>().map_err(|_| bad("invalid mtime"))?
                });
            }
            b"uid" if policy.keeps_owners() => p.pax_uid = Some(id(value, "uid")?),
            b"gid" if policy.keeps_owners() => p.pax_gid = Some(id(value, "gid")?),
            k if policy.reads_xattrs() && k.starts_with(PAX_XATTR) => {
                let name = std::str::from_utf8(&k[PAX_XATTR.len()..])
                    .map_err(|_| bad("invalid xattr name"))?;
                if policy.xattr_kept(name) {
                    p.xattrs.push((name.to_string(), value.to_vec()));
                }
            }
            _ => {}
        }
    }
    Ok(())
}
