//! The pseudo-terminal of a PTY process: a master/slave pair with its window size.

use std::os::fd::{AsFd, OwnedFd};

pub(super) fn open_pty(cols: u32, rows: u32) -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    set_winsize(master.as_fd(), cols, rows)?;
    Ok((master, slave))
}

pub(super) fn set_winsize(
    fd: std::os::fd::BorrowedFd<'_>,
    cols: u32,
    rows: u32,
) -> std::io::Result<()> {
    let ws = rustix::termios::Winsize {
        ws_row: rows.clamp(1, u16::MAX.into()) as u16,
        ws_col: cols.clamp(1, u16::MAX.into()) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(fd, ws)?;
    Ok(())
}
