//! The stock of prepared network slots (`docs/network.md`, "Network slots"): uid slots whose
//! network namespace is already made, with loopback up and the sandbox's link in place
//! (`pdk<slot>` on the host, `eth0` inside with its address and default route). A networked
//! native create takes one, gets its rules and resolver, and its setup stage joins the
//! namespace instead of making one; so the kernel's namespace and veth work, and the wait on
//! the cleanup of destroyed namespaces, happen off the create path.
//!
//! - A background thread at nice 10 refills the stock up to its size, one slot at a time,
//!   and never while a create is in flight.
//! - A slot is handed out once: the namespace lives as long as its sandbox and goes with it.
//! - A stocked slot holds its uid range's host-wide claim, whose marker is a file
//!   `<data>/netslots/<slot>`; its namespace is held only by a descriptor of this process,
//!   so a crash takes namespace and link with it, and the next open removes the markers and
//!   releases their claims ([`NetSlots::sweep`]).

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::{Runtime, SLOTS};
use crate::error::{Result, RuntimeError};

/// The most slots a stock may hold (each is a namespace, a veth pair and a uid range).
pub const MAX_NET_SLOTS: usize = 64;

/// What `/metrics` reports of the stock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetSlotStats {
    /// The size the refill aims for (0: no stock).
    pub target: usize,
    /// Slots ready now.
    pub ready: usize,
    /// Networked creates that took a slot.
    pub hits: u64,
    /// Networked native creates that found the stock empty and made their network cold.
    pub misses: u64,
    /// Slots prepared so far, and the wall time that took in all (work kept off creates).
    pub prepared: u64,
    pub prepare_time: Duration,
}

/// A slot taken from the stock: its uid slot and its network namespace.
#[derive(Debug)]
pub(super) struct Taken {
    pub(super) slot: u32,
    pub(super) netns: fs::File,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Taken>,
    /// Creates in flight: the refill waits for none.
    creating: usize,
    /// The refill is preparing a slot (close waits for it).
    busy: bool,
    closed: bool,
}

/// The stock of one runtime.
#[derive(Debug)]
pub(super) struct NetSlots {
    target: usize,
    /// Where the claims' marker files live.
    dir: PathBuf,
    claims: crate::slots::SlotClaims,
    state: Mutex<State>,
    wake: Condvar,
    hits: AtomicU64,
    misses: AtomicU64,
    prepared: AtomicU64,
    prepare_us: AtomicU64,
}

/// Counts a create in flight while it lives.
pub(super) struct Creating<'a>(&'a NetSlots);

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.creating = st.creating.saturating_sub(1);
        drop(st);
        self.0.wake.notify_all();
    }
}

impl NetSlots {
    pub(super) fn new(data_dir: &Path, target: usize, claims: crate::slots::SlotClaims) -> Self {
        NetSlots {
            target: target.min(MAX_NET_SLOTS),
            dir: data_dir.join("netslots"),
            claims,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            prepared: AtomicU64::new(0),
            prepare_us: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn marker(&self, slot: u32) -> PathBuf {
        self.dir.join(slot.to_string())
    }

    pub(super) fn stats(&self) -> NetSlotStats {
        NetSlotStats {
            target: self.target,
            ready: self.lock().ready.len(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            prepared: self.prepared.load(Ordering::Relaxed),
            prepare_time: Duration::from_micros(self.prepare_us.load(Ordering::Relaxed)),
        }
    }

    /// Marks a create in flight until the guard drops.
    pub(super) fn creating(&self) -> Creating<'_> {
        self.lock().creating += 1;
        Creating(self)
    }

    /// A slot for a networked create, counted as a hit or (with a stock) a miss.
    pub(super) fn take(&self) -> Option<Taken> {
        if self.target == 0 {
            return None;
        }
        let t = self.lock().ready.pop_front();
        match &t {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        self.wake.notify_all();
        t
    }

    /// Moves the uid range's claim of a taken slot to its sandbox (`marker`).
    pub(super) fn hand_over(&self, slot: u32, marker: &Path) {
        self.claims.reclaim(slot, marker);
        let _ = fs::remove_file(self.marker(slot));
    }

    /// Gives back what a stocked slot holds: its namespace (and link), claim and marker.
    pub(super) fn release(&self, t: Taken) {
        drop(t.netns);
        crate::net::Net::remove_link(t.slot);
        self.claims.release(t.slot, &self.marker(t.slot));
        let _ = fs::remove_file(self.marker(t.slot));
    }

    /// Stops the refill and releases every stocked slot; returns their uid slots.
    pub(super) fn close(&self) -> Vec<u32> {
        self.wake.notify_all();
        let ready: Vec<Taken> = {
            let mut st = self.lock();
            st.closed = true;
            // A slot being prepared is released by the refill when it sees `closed`; its
            // marker is gone once it is done (bounded: a stuck netlink call does not hold
            // the close up for ever).
            st = self
                .wake
                .wait_timeout_while(st, Duration::from_secs(10), |s| s.busy)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            st.ready.drain(..).collect()
        };
        self.wake.notify_all();
        let slots = ready.iter().map(|t| t.slot).collect();
        for t in ready {
            self.release(t);
        }
        slots
    }

    /// At open, while no other process has the data directory open: the markers a crashed
    /// process left, with their claims (their namespaces and links went with it).
    pub(super) fn sweep(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            if let Some(slot) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                tracing::info!(slot, "releasing a network slot a crash left");
                self.claims.release(slot, &e.path());
            }
            let _ = fs::remove_file(e.path());
        }
    }

    /// Starts the refill thread (with a stock size above 0).
    pub(super) fn start(self: &Arc<Self>, rt: Weak<Runtime>) -> Result<()> {
        if self.target == 0 {
            return Ok(());
        }
        crate::datadir::create_private(&self.dir)?;
        let this = self.clone();
        std::thread::Builder::new()
            .name("paddock-netslots".into())
            .spawn(move || this.refill(rt))
            .map_err(RuntimeError::io("starting the network slot refill"))?;
        Ok(())
    }

    /// The refill loop: one slot at a time while the stock is short and no create runs.
    fn refill(&self, rt: Weak<Runtime>) {
        // Below the creates it prepares for; the threads it starts inherit the value.
        crate::sys::nice_this_thread(10);
        let mut failures = 0u32;
        loop {
            {
                let mut st = self.lock();
                loop {
                    if st.closed {
                        return;
                    }
                    if rt.strong_count() == 0 {
                        drop(st);
                        self.close();
                        return;
                    }
                    if st.ready.len() < self.target && st.creating == 0 {
                        st.busy = true;
                        break;
                    }
                    // Woken by takes, finished creates and close; the timeout only notices
                    // a runtime dropped without close.
                    st = self
                        .wake
                        .wait_timeout(st, Duration::from_secs(1))
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            }
            let Some(runtime) = rt.upgrade() else {
                self.lock().busy = false;
                self.close();
                return;
            };
            let r = runtime.stock_one(self);
            self.lock().busy = false;
            self.wake.notify_all();
            match r {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!("preparing a network slot: {e}");
                    // Backs off (100 ms doubling to 30 s) unless closed meanwhile.
                    let pause = Duration::from_millis(100u64 << failures.min(9))
                        .min(Duration::from_secs(30));
                    drop(runtime);
                    let st = self.lock();
                    let _ = self.wake.wait_timeout_while(st, pause, |s| !s.closed);
                }
            }
        }
    }

    /// Adds a prepared slot, unless the stock closed meanwhile (then it is released).
    fn push(&self, t: Taken) -> bool {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            self.release(t);
            return false;
        }
        st.ready.push_back(t);
        true
    }
}

impl Runtime {
    /// Prepares one slot for `stock`: claims a free uid slot, makes its namespace and link.
    fn stock_one(&self, stock: &NetSlots) -> Result<()> {
        let slot = {
            let mut s = self.slots.lock().expect("slots poisoned");
            let mut found = None;
            for i in (0..SLOTS).filter(|i| !s.contains(i)) {
                let m = stock.marker(i);
                fs::write(&m, b"").map_err(RuntimeError::io("writing a network slot marker"))?;
                if stock.claims.claim(i, &m) {
                    found = Some(i);
                    break;
                }
                let _ = fs::remove_file(&m);
            }
            let slot = found.ok_or(RuntimeError::Exhausted)?;
            s.insert(slot);
            slot
        };
        let t = std::time::Instant::now();
        match self.net.prepare_slot(slot) {
            Ok(netns) => {
                stock.prepared.fetch_add(1, Ordering::Relaxed);
                stock
                    .prepare_us
                    .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                if !stock.push(Taken { slot, netns }) {
                    self.slots.lock().expect("slots poisoned").remove(&slot);
                }
                Ok(())
            }
            Err(e) => {
                Net::remove_link(slot);
                stock.claims.release(slot, &stock.marker(slot));
                let _ = fs::remove_file(stock.marker(slot));
                self.slots.lock().expect("slots poisoned").remove(&slot);
                Err(e)
            }
        }
    }

    /// The stock of network slots: size, ready, hits and misses (`/metrics`).
    pub fn net_slot_stats(&self) -> NetSlotStats {
        self.netslots.stats()
    }
}

use crate::net::Net;
