//! The `filesystem.Filesystem` service (placeholder until implemented).

#![allow(refining_impl_trait)]

use connectrpc::{
    ConnectError, ErrorCode, RequestContext, ServiceRequest, ServiceResult, ServiceStream,
};
use paddock_envd::filesystem::*;

/// The filesystem service.
#[derive(Debug, Default)]
pub struct FsService;

impl FsService {
    pub fn new() -> Self {
        FsService
    }
}

fn todo_err() -> ConnectError {
    ConnectError::new(ErrorCode::Unimplemented, "not implemented yet")
}

impl Filesystem for FsService {
    async fn stat<'a>(
        &'a self,
        _c: RequestContext,
        _r: ServiceRequest<'_, StatRequest>,
    ) -> ServiceResult<StatResponse> {
        Err(todo_err())
    }
    async fn make_dir<'a>(
        &'a self,
        _c: RequestContext,
        _r: ServiceRequest<'_, MakeDirRequest>,
    ) -> ServiceResult<MakeDirResponse> {
        Err(todo_err())
    }
    async fn r#move<'a>(
        &'a self,
        _c: RequestContext,
        _r: ServiceRequest<'_, MoveRequest>,
    ) -> ServiceResult<MoveResponse> {
        Err(todo_err())
    }
    async fn list_dir<'a>(
        &'a self,
        _c: RequestContext,
        _r: ServiceRequest<'_, ListDirRequest>,
    ) -> ServiceResult<ListDirResponse> {
        Err(todo_err())
    }
    async fn remove<'a>(
        &'a self,
        _c: RequestContext,
        _r: ServiceRequest<'_, RemoveRequest>,
    ) -> ServiceResult<RemoveResponse> {
        Err(todo_err())
    }
    async fn watch_dir(
        &self,
        _c: RequestContext,
        _r: ServiceRequest<'_, WatchDirRequest>,
    ) -> ServiceResult<ServiceStream<WatchDirResponse>> {
        Err(todo_err())
    }
    async fn create_watcher<'a>(
        &'a self,
        _c: RequestContext,
        _r: ServiceRequest<'_, CreateWatcherRequest>,
    ) -> ServiceResult<CreateWatcherResponse> {
        Err(todo_err())
    }
    async fn get_watcher_events<'a>(
        &'a self,
        _c: RequestContext,
        _r: ServiceRequest<'_, GetWatcherEventsRequest>,
    ) -> ServiceResult<GetWatcherEventsResponse> {
        Err(todo_err())
    }
    async fn remove_watcher<'a>(
        &'a self,
        _c: RequestContext,
        _r: ServiceRequest<'_, RemoveWatcherRequest>,
    ) -> ServiceResult<RemoveWatcherResponse> {
        Err(todo_err())
    }
}
