//! The `filesystem.Filesystem` Connect service: the RPC handlers over the parts.

// The generated service trait returns `impl Encodable`; returning the concrete message is
// the intended use.
#![allow(refining_impl_trait)]

use std::sync::{Arc, Mutex};

use buffa::MessageField;
use connectrpc::{
    ConnectError, RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream,
};
use paddock_envd::filesystem::*;
use tokio::sync::mpsc;

use super::entry::{Names, entry_info};
use super::ops::{list_dir, make_dir, move_path, remove, unique_hex};
use super::watch::{WatchSpec, buffer_watch, start_watch, stream_watch};
use super::{Buffered, FsService, MAX_WATCHERS, Watcher, fs_err, run_as};
use crate::lock;
use crate::rpc::{keepalive, user_of};
use crate::users;

impl Filesystem for FsService {
    async fn stat(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, StatRequest>,
    ) -> ServiceResult<StatResponse> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        let path = users::resolve_path(&user, &req.path);
        let entry = run_as(&user, move || {
            entry_info(&path, &mut Names::default()).map_err(|e| match e.raw_os_error() {
                // A path through a regular file does not exist either (`exists` ⇒ False).
                Some(libc::ENOENT | libc::ENOTDIR) => {
                    ConnectError::not_found(format!("file not found: {:?}", path.as_os_str()))
                }
                _ => fs_err(&e, &path),
            })
        })
        .await??;
        Response::ok(StatResponse {
            entry: MessageField::some(entry),
            ..Default::default()
        })
    }

    async fn make_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, MakeDirRequest>,
    ) -> ServiceResult<MakeDirResponse> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        let path = users::resolve_path(&user, &req.path);
        let entry = run_as(&user, move || make_dir(&path)).await??;
        Response::ok(MakeDirResponse {
            entry: MessageField::some(entry),
            ..Default::default()
        })
    }

    async fn r#move(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, MoveRequest>,
    ) -> ServiceResult<MoveResponse> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        let src = users::resolve_path(&user, &req.source);
        let dst = users::resolve_path(&user, &req.destination);
        let entry = run_as(&user, move || move_path(&src, &dst)).await??;
        Response::ok(MoveResponse {
            entry: MessageField::some(entry),
            ..Default::default()
        })
    }

    async fn list_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, ListDirRequest>,
    ) -> ServiceResult<ListDirResponse> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        let path = users::resolve_path(&user, &req.path);
        let depth = req.depth;
        let entries = run_as(&user, move || {
            // `metadata` follows a symlinked root, as envd does.
            let meta = std::fs::metadata(&path).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => {
                    ConnectError::not_found(format!("directory not found: {:?}", path.as_os_str()))
                }
                _ => fs_err(&e, &path),
            })?;
            if !meta.is_dir() {
                return Err(ConnectError::invalid_argument(format!(
                    "path is not a directory: {:?}",
                    path.as_os_str()
                )));
            }
            list_dir(&path, depth, &mut Names::default()).map_err(|e| fs_err(&e, &path))
        })
        .await??;
        Response::ok(ListDirResponse {
            entries,
            ..Default::default()
        })
    }

    async fn remove(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, RemoveRequest>,
    ) -> ServiceResult<RemoveResponse> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        let path = users::resolve_path(&user, &req.path);
        run_as(&user, move || remove(&path).map_err(|e| fs_err(&e, &path))).await??;
        Response::ok(RemoveResponse::default())
    }

    async fn watch_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, WatchDirRequest>,
    ) -> ServiceResult<ServiceStream<WatchDirResponse>> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        let spec = WatchSpec {
            root: users::resolve_path(&user, &req.path),
            user,
            recursive: req.recursive,
            include_entry: req.include_entry,
        };
        let w = start_watch(spec, req.allow_network_mounts).await?;
        let (tx, rx) = mpsc::channel(64);
        let deadline = ctx.deadline().map(tokio::time::Instant::from_std);
        tokio::spawn(stream_watch(w, tx, keepalive(&ctx), deadline));
        let s =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) });
        Ok(Response::new(Box::pin(s) as ServiceStream<WatchDirResponse>))
    }

    async fn create_watcher(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, CreateWatcherRequest>,
    ) -> ServiceResult<CreateWatcherResponse> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        if lock(&self.watchers).len() >= MAX_WATCHERS {
            return Err(ConnectError::resource_exhausted(
                "too many watchers; remove some first",
            ));
        }
        let spec = WatchSpec {
            root: users::resolve_path(&user, &req.path),
            user,
            recursive: req.recursive,
            include_entry: req.include_entry,
        };
        let w = start_watch(spec, req.allow_network_mounts).await?;
        let buffer = Arc::new(Mutex::new(Buffered::default()));
        let task = tokio::spawn(buffer_watch(w, buffer.clone())).abort_handle();
        let id = format!("w{}", unique_hex());
        lock(&self.watchers).insert(id.clone(), Watcher { buffer, task });
        Response::ok(CreateWatcherResponse {
            watcher_id: id,
            ..Default::default()
        })
    }

    async fn get_watcher_events(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, GetWatcherEventsRequest>,
    ) -> ServiceResult<GetWatcherEventsResponse> {
        let req = request.to_owned_message();
        let buffer = lock(&self.watchers)
            .get(&req.watcher_id)
            .map(|w| w.buffer.clone())
            .ok_or_else(|| watcher_not_found(&req.watcher_id))?;
        let mut b = lock(&buffer);
        if let Some(e) = &b.error {
            return Err(e.clone());
        }
        let events = b.events.drain(..).collect();
        drop(b);
        Response::ok(GetWatcherEventsResponse {
            events,
            ..Default::default()
        })
    }

    async fn remove_watcher(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, RemoveWatcherRequest>,
    ) -> ServiceResult<RemoveWatcherResponse> {
        let req = request.to_owned_message();
        // Dropping the watcher aborts its task.
        lock(&self.watchers)
            .remove(&req.watcher_id)
            .ok_or_else(|| watcher_not_found(&req.watcher_id))?;
        Response::ok(RemoveWatcherResponse::default())
    }
}

fn watcher_not_found(id: &str) -> ConnectError {
    ConnectError::not_found(format!("watcher {id:?} not found"))
}
