//! The id of the request a task is serving, set by [`crate::trace`] and read where a
//! response is built ([`crate::error`]: a 500 names it). No imports, so both can use it.

tokio::task_local! {
    pub(crate) static CURRENT: String;
}

/// The id of the request being served by this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}
