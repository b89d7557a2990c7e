//! The btrfs ioctls the layer store needs (subvolumes, snapshots, qgroup limits, the ids
//! that name a subvolume's qgroup in sysfs), as safe functions on borrowed descriptors.
//!
//! Each argument struct is `#[repr(C)]` with the kernel's layout (`linux/btrfs.h`), built
//! here from checked inputs and alive for the whole call, which is the invariant every
//! `SAFETY` note below relies on.

use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd};

/// The longest subvolume name `btrfs_ioctl_vol_args` holds (`BTRFS_PATH_NAME_MAX`).
pub(crate) const VOL_NAME_MAX: usize = 4087;
/// The longest snapshot name `btrfs_ioctl_vol_args_v2` holds (`BTRFS_SUBVOL_NAME_MAX`).
pub(crate) const SNAP_NAME_MAX: usize = 4039;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; VOL_NAME_MAX + 1],
}

/// `struct btrfs_qgroup_limit`.
#[repr(C)]
#[derive(Default)]
struct QgroupLimit {
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

/// `struct btrfs_ioctl_qgroup_limit_args`.
#[repr(C)]
#[derive(Default)]
struct QgroupLimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;

/// `struct btrfs_ioctl_vol_args_v2` (the qgroup-inherit union left zero).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SNAP_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

const fn iow(nr: u64, size: usize) -> u64 {
    (1 << 30) | ((size as u64) << 16) | (0x94 << 8) | nr
}
const fn ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (0x94 << 8) | nr
}
const BTRFS_IOC_SUBVOL_CREATE: u64 = iow(14, std::mem::size_of::<VolArgs>());
const BTRFS_IOC_SNAP_DESTROY: u64 = iow(15, std::mem::size_of::<VolArgs>());
const BTRFS_IOC_SNAP_CREATE_V2: u64 = iow(23, std::mem::size_of::<VolArgsV2>());
const BTRFS_IOC_QGROUP_LIMIT: u64 = ior(43, std::mem::size_of::<QgroupLimitArgs>());
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;
/// `BTRFS_FIRST_FREE_OBJECTID`: the root directory of every subvolume.
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
const BTRFS_IOC_INO_LOOKUP: u64 =
    (3 << 30) | ((std::mem::size_of::<InoLookupArgs>() as u64) << 16) | (0x94 << 8) | 18;
/// `struct btrfs_ioctl_fs_info_args`: only `fsid` (bytes 16..32) is read.
const FS_INFO_SIZE: usize = 1024;
const BTRFS_IOC_FS_INFO: u64 = ior(31, FS_INFO_SIZE);

/// `name` as the NUL-terminated array of an argument struct: non-empty, at most `N - 1`
/// bytes, no `/` or NUL.
fn name_array<const N: usize>(name: &str) -> io::Result<Box<[u8; N]>> {
    if name.is_empty() || name.len() >= N || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad subvolume name {name:?}"),
        ));
    }
    let mut a = Box::new([0u8; N]);
    a[..name.len()].copy_from_slice(name.as_bytes());
    Ok(a)
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn vol_args(name: &str) -> io::Result<Box<VolArgs>> {
    Ok(Box::new(VolArgs {
        fd: 0,
        name: *name_array::<{ VOL_NAME_MAX + 1 }>(name)?,
    }))
}

/// Creates subvolume `name` in directory `parent` (on a btrfs filesystem).
pub(crate) fn subvol_create(parent: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let args = vol_args(name)?;
    // SAFETY: `args` is a correctly laid out btrfs_ioctl_vol_args that outlives the call
    // and `parent` is a descriptor borrowed for it; the kernel only reads the struct.
    check(unsafe { libc::ioctl(parent.as_raw_fd(), BTRFS_IOC_SUBVOL_CREATE as _, &*args) })
}

/// Deletes subvolume `name` of directory `parent` and everything in it.
pub(crate) fn subvol_destroy(parent: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let args = vol_args(name)?;
    // SAFETY: as in `subvol_create`.
    check(unsafe { libc::ioctl(parent.as_raw_fd(), BTRFS_IOC_SNAP_DESTROY as _, &*args) })
}

/// Takes a read-only snapshot of the subvolume `src` is the root of, as `name` in
/// directory `parent`.
pub(crate) fn snapshot_readonly(
    parent: BorrowedFd<'_>,
    src: BorrowedFd<'_>,
    name: &str,
) -> io::Result<()> {
    let args = Box::new(VolArgsV2 {
        fd: i64::from(src.as_raw_fd()),
        transid: 0,
        flags: BTRFS_SUBVOL_RDONLY,
        unused: [0; 4],
        name: *name_array::<{ SNAP_NAME_MAX + 1 }>(name)?,
    });
    // SAFETY: `args` is a correctly laid out btrfs_ioctl_vol_args_v2 that outlives the
    // call; `parent` and `args.fd` (from `src`) are descriptors borrowed for the call.
    check(unsafe { libc::ioctl(parent.as_raw_fd(), BTRFS_IOC_SNAP_CREATE_V2 as _, &*args) })
}

/// Limits what the subvolume `dir` is the root of references to `bytes`.
pub(crate) fn qgroup_limit_referenced(dir: BorrowedFd<'_>, bytes: u64) -> io::Result<()> {
    let args = QgroupLimitArgs {
        qgroupid: 0, // 0: the subvolume the descriptor is on.
        lim: QgroupLimit {
            flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
            max_rfer: bytes,
            ..Default::default()
        },
    };
    // SAFETY: `args` is a correctly laid out btrfs_ioctl_qgroup_limit_args that outlives
    // the call; `dir` is a descriptor borrowed for it.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), BTRFS_IOC_QGROUP_LIMIT as _, &args) })
}

/// The id of the subvolume `dir` is on (its qgroup is `0/<id>`).
pub(crate) fn subvolume_id(dir: BorrowedFd<'_>) -> io::Result<u64> {
    let mut look = Box::new(InoLookupArgs {
        treeid: 0,
        objectid: BTRFS_FIRST_FREE_OBJECTID,
        name: [0; 4080],
    });
    // SAFETY: `look` is a correctly laid out btrfs_ioctl_ino_lookup_args that outlives the
    // call and is ours to write; with treeid 0 and the first free objectid the kernel only
    // fills in the id of the subvolume `dir` is on.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), BTRFS_IOC_INO_LOOKUP as _, &mut *look) })?;
    Ok(look.treeid)
}

/// The UUID of the btrfs filesystem `dir` is on.
pub(crate) fn fsid(dir: BorrowedFd<'_>) -> io::Result<[u8; 16]> {
    let mut info = vec![0u8; FS_INFO_SIZE];
    // SAFETY: `info` is a buffer of the size of btrfs_ioctl_fs_info_args, ours to write and
    // alive for the call (the kernel writes exactly that many bytes).
    check(unsafe { libc::ioctl(dir.as_raw_fd(), BTRFS_IOC_FS_INFO as _, info.as_mut_ptr()) })?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&info[16..32]);
    Ok(id)
}
