//! `paddock pause ID [--mode filesystem]` and `paddock resume ID`.

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::api::Api;
use super::{Conn, format, write_stdout};

/// What a pause keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Processes and memory, frozen (no CPU; memory stays in use).
    Full,
    /// The filesystem only: processes stop and their memory is freed; resume starts the
    /// sandbox again on the same files.
    Filesystem,
}

#[derive(Args, Debug)]
pub(crate) struct PauseArgs {
    /// The sandbox.
    pub(crate) id: String,
    /// What the pause keeps.
    #[arg(long, value_enum, default_value = "full")]
    pub(crate) mode: Mode,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Pauses a sandbox; prints its state and when it will be removed if not resumed.
pub(crate) async fn pause(a: PauseArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let mode = match a.mode {
        Mode::Full => "full",
        Mode::Filesystem => "filesystem",
    };
    let v: Value = api
        .post_json(
            &["v1", "sandboxes", &a.id, "pause"],
            &json!({ "mode": mode }),
        )
        .await?;
    write_stdout(&format!(
        "{} paused ({}), kept until {}\n",
        format::cell(&v["id"]),
        format::cell(&v["paused_mode"]),
        format::cell(&v["expires_at"])
    ))?;
    Ok(0)
}

#[derive(Args, Debug)]
pub(crate) struct ResumeArgs {
    /// The sandbox.
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Resumes a paused sandbox (a running one is left as it is); prints its new expiry.
pub(crate) async fn resume(a: ResumeArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let v: Value = api
        .post_json(&["v1", "sandboxes", &a.id, "resume"], &json!({}))
        .await?;
    write_stdout(&format!(
        "{} {}, expires {}\n",
        format::cell(&v["id"]),
        format::cell(&v["state"]),
        format::cell(&v["expires_at"])
    ))?;
    Ok(0)
}
