//! What other parts of the agent (the service supervisor) may do with the process table:
//! start a listed process, follow its output and exit, signal its group, kill its tree.

use std::sync::Arc;

use connectrpc::ConnectError;
use paddock_envd::process::{ProcessEvent, StartRequest};

use super::{Proc, Procs};
use crate::signals::{self, Scope};
use crate::users::User;

impl Procs {
    /// Starts a process in the table (listed, selectable by its tag, output kept), as
    /// [`Procs`]' `Start` RPC does.
    pub(crate) fn start_listed(
        &self,
        req: &StartRequest,
        user: &User,
    ) -> Result<Arc<Proc>, ConnectError> {
        self.spawn(req, user)
    }

    /// The process's output from its first chunk on, then exactly one end event.
    pub(crate) fn follow(
        p: Arc<Proc>,
    ) -> impl futures::Stream<Item = Result<ProcessEvent, ConnectError>> + Send + 'static {
        Procs::events(p, 0, false, None, None)
    }

    /// Signals the process's group through its pidfd; `not_found` once it is reaped.
    pub(crate) fn signal_group(&self, p: &Proc, sig: i32) -> Result<(), ConnectError> {
        self.signal(p, sig, Scope::Group)
    }
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGKILL to the process and every descendant (checked against its start time).
    pub(crate) fn kill_tree(&self) {
        signals::kill_tree(self.pid, self.start);
    }
}
