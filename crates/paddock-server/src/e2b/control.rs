//! The E2B control plane: create, connect, list, get, kill, timeout and metrics of sandboxes,
//! on Paddock's own lifecycle. Paths, bodies and status codes follow the E2B API (section 2
//! of `docs/e2b-wire.md`); sandboxes made here are ordinary Paddock sandboxes, visible
//! under `/v1` too.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use paddock_store::{SandboxFilter, SandboxRecord, SandboxState, now_ms};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::access_token;
use super::common::{E2bCaller, E2bResult, body, json_status};
use super::wire::{
    AutoResume, ListedSandbox, NetworkBody, SandboxBody, SandboxMetric, Shaped,
    auto_resume_enabled, cpu_count, e2b_network, volume_uses,
};
use crate::error::ApiError;
use crate::wire::form_urlencoded_pairs;
use crate::wire::{no_content, rfc3339};
use paddock_service::auth::keys::Caller;
use paddock_service::lifecycle::{self, NewSandbox};
use paddock_service::sandbox_spec::{MAX_ENV, check_metadata, check_timeout};
use paddock_service::state::{AppState, truncate};

/// Largest page of `GET /v2/sandboxes`, and the default.
pub const MAX_LIST_PAGE: u32 = 100;

/// `NewSandbox` (`POST /sandboxes`) and `NewSandboxV2` (`POST /v2/sandboxes`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateBody {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    /// Seconds.
    timeout: Option<u64>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    /// The old API's flag for an access token; Paddock always issues one.
    #[allow(dead_code)]
    secure: Option<bool>,
    auto_pause: Option<bool>,
    auto_pause_memory: Option<bool>,
    auto_resume: Option<Shaped<AutoResume>>,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    network: Option<Shaped<NetworkBody>>,
    /// Not supported: any value but null is refused.
    mcp: Option<IgnoredAny>,
    /// Not supported: any value but null is refused.
    iam: Option<IgnoredAny>,
    volume_mounts: Option<Vec<Shaped<paddock_service::volumes::VolumeUse>>>,
}

impl CreateBody {
    fn validate(self, state: &AppState) -> Result<NewSandbox, ApiError> {
        let unsupported = |what: &str| {
            Err(ApiError::BadRequest(format!(
                "{what} is not supported by Paddock yet"
            )))
        };
        let pause_on_timeout =
            (self.auto_pause == Some(true)).then_some(if self.auto_pause_memory == Some(false) {
                paddock_runtime::PauseMode::Filesystem
            } else {
                paddock_runtime::PauseMode::Full
            });
        let auto_resume = auto_resume_enabled(self.auto_resume.as_ref())?;
        if auto_resume && pause_on_timeout.is_none() {
            return Err(ApiError::BadRequest(
                "autoResume needs autoPause (on_timeout: pause)".into(),
            ));
        }
        let (ports_public, network) =
            e2b_network(self.network.as_ref(), self.allow_internet_access)?;
        if self.mcp.is_some() {
            return unsupported("mcp");
        }
        if self.iam.is_some() {
            return unsupported("iam");
        }
        let volumes = volume_uses(self.volume_mounts)?;
        let timeout = match self.timeout {
            Some(t) => check_timeout(state, t)?,
            None => state.cfg.default_timeout,
        };
        let metadata = self.metadata.unwrap_or_default();
        check_metadata(&metadata)?;
        let mut env = self.env_vars.unwrap_or_default();
        if env.len() > MAX_ENV {
            return Err(ApiError::BadRequest(format!("at most {MAX_ENV} envVars")));
        }
        // `Secret.fill(name)` placeholders (`${e2b.secrets.NAME}`) become tenant secrets.
        let secrets = super::secrets::take_placeholders(&mut env)?;
        let d = &paddock_service::templates::default_limits(
            state,
            self.template_id.as_deref().unwrap_or("base"),
        );
        Ok(NewSandbox {
            template: self.template_id.unwrap_or_else(|| "base".into()),
            timeout,
            limits: paddock_core::Limits {
                tmp_bytes: d.tmp_bytes.min(d.memory_bytes / 2),
                ..d.clone()
            },
            env,
            metadata: metadata.clone(),
            user: None,
            webhook_url: None,
            ports_public,
            network,
            pause_on_timeout,
            auto_resume,
            secrets,
            node_selector: BTreeMap::new(),
            isolation: paddock_service::isolation::parse(
                metadata
                    .get(paddock_service::isolation::E2B_METADATA_KEY)
                    .map(String::as_str),
            )?,
            volumes,
        })
    }
}

/// The `domain` told to E2B clients: `--domain`, with the port clients reach this server on
/// when it is not the scheme's default (`localhost:7070`), because the SDKs build port URLs
/// (`get_host`) and the data-plane URL as `{port}-{id}.{domain}` and would otherwise
/// address port 80 or 443. Behind a proxy on 443 (`--public-url https://...`) it is the bare
/// domain. Decided like the REST port URLs ([`crate::wire::origin`]).
pub(super) fn sdk_domain(state: &AppState, headers: &HeaderMap) -> String {
    let domain = state.cfg.domain.trim_matches('.');
    match crate::wire::origin::url_port(state, headers) {
        Some(p) => format!("{domain}:{p}"),
        None => domain.to_owned(),
    }
}

/// The `Sandbox` object of create, connect and fork.
pub(super) fn sandbox_body(state: &AppState, r: &SandboxRecord, domain: &str) -> SandboxBody {
    SandboxBody::of(r, access_token(state, &r.id), domain)
}

/// The running or paused sandbox `id` of the caller; anything else (stopped, another
/// tenant's, not an id) is E2B's 404.
pub(super) async fn live_record(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<SandboxRecord, ApiError> {
    let r = state.record_for(caller, id).await?;
    if !matches!(r.state, SandboxState::Running | SandboxState::Paused) {
        return Err(ApiError::sandbox_not_found(id));
    }
    Ok(r)
}

/// The running sandbox `id` of the caller; anything else (stopped, another tenant's, not an
/// id) is E2B's 404.
async fn running_record(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<SandboxRecord, ApiError> {
    let r = state.record_for(caller, id).await?;
    if r.state != SandboxState::Running {
        return Err(ApiError::sandbox_not_found(id));
    }
    Ok(r)
}

pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    req: Request,
) -> E2bResult<Response> {
    let domain = sdk_domain(&state, req.headers());
    let b: CreateBody = body(&state, req).await?;
    // Its own task, as `/v1`: a client leaving mid-create does not cut it in two.
    let (st, c) = (state.clone(), caller.clone());
    let res = tokio::spawn(async move {
        crate::fleet::layers::ensure(&st, b.template_id.as_deref().unwrap_or("base")).await?;
        let spec = b.validate(&st)?;
        Ok(lifecycle::create(&st, &c, spec).await?)
    })
    .await
    .unwrap_or_else(|e| Err(ApiError::Internal(format!("create task: {e}"))));
    let id = res.as_ref().ok().map(|r| r.id.clone());
    let r = state
        .audited(
            &caller,
            "sandbox.create",
            id.as_deref(),
            Some("e2b".into()),
            res,
        )
        .await?;
    Ok(json_status(
        StatusCode::CREATED,
        &sandbox_body(&state, &r, &domain),
    ))
}

/// Moves the deadline to `secs` from now if that is later than the current one (connect
/// and refresh never shorten a sandbox's life).
pub(super) async fn extend(
    state: &AppState,
    caller: &Caller,
    r: &mut SandboxRecord,
    secs: u64,
    why: &str,
) -> Result<(), ApiError> {
    let d = check_timeout(state, secs)?;
    let wanted = now_ms().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    if r.expires_at.is_none_or(|e| e < wanted) {
        let res = lifecycle::set_timeout(state, r, d).await;
        let id = r.id.clone();
        state
            .audited(caller, "sandbox.timeout", Some(&id), Some(why.into()), res)
            .await?;
    }
    Ok(())
}

pub(super) async fn get_one(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> E2bResult<Response> {
    let r = live_record(&state, &caller, &id).await?;
    let domain = sdk_domain(&state, &headers);
    let token = access_token(&state, &r.id);
    Ok(json_status(
        StatusCode::OK,
        &ListedSandbox::of(&r, Some(token), &domain),
    ))
}

pub(super) async fn kill(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
) -> E2bResult<Response> {
    let res: Result<_, ApiError> = async {
        live_record(&state, &caller, &id).await?;
        Ok(lifecycle::stop(&state, &id, paddock_store::StopReason::Killed).await?)
    }
    .await;
    state
        .audited(
            &caller,
            "sandbox.delete",
            Some(&id),
            Some("e2b".into()),
            res,
        )
        .await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutBody {
    timeout: u64,
}

pub(super) async fn set_timeout(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
    req: Request,
) -> E2bResult<Response> {
    let b: TimeoutBody = body(&state, req).await?;
    let res: Result<_, ApiError> = async {
        let mut r = running_record(&state, &caller, &id).await?;
        let d = check_timeout(&state, b.timeout)?;
        Ok(lifecycle::set_timeout(&state, &mut r, d).await?)
    }
    .await;
    state
        .audited(
            &caller,
            "sandbox.timeout",
            Some(&id),
            Some("e2b".into()),
            res,
        )
        .await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    duration: Option<u64>,
}

/// `POST /sandboxes/{id}/refreshes`: the old keep-alive, extends the timeout by `duration`
/// seconds from now (default 60) when that is later than the current deadline.
pub(super) async fn refresh(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
    req: Request,
) -> E2bResult<Response> {
    let b: RefreshBody = body(&state, req).await?;
    let mut r = running_record(&state, &caller, &id).await?;
    extend(
        &state,
        &caller,
        &mut r,
        b.duration.unwrap_or(60),
        "e2b refresh",
    )
    .await?;
    Ok(no_content())
}

/// Query of `GET /v2/sandboxes`.
#[derive(Debug, Default)]
struct ListQuery {
    metadata: BTreeMap<String, String>,
    running: bool,
    paused: bool,
    template: Option<String>,
    started_after: Option<i64>,
    next: Option<String>,
    limit: u32,
}

/// Decodes E2B's `metadata` list filter: the parameter value (already percent-decoded once
/// by the query parser) is unescaped once more, split at `&` and `=`, and each key and value
/// unescaped (what the SDK's double encoding needs, and what upstream does).
fn parse_metadata_filter(v: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let once = percent_decode(v)?;
    let mut m = BTreeMap::new();
    for pair in once.split('&').filter(|p| !p.is_empty()) {
        let (k, val) = pair.split_once('=').ok_or_else(|| {
            ApiError::BadRequest(format!(
                "metadata filter {:?} is not key=value",
                truncate(pair, 64)
            ))
        })?;
        m.insert(percent_decode(k)?, percent_decode(val)?);
    }
    check_metadata(&m)?;
    Ok(m)
}

/// Percent-decoding (`+` stays `+`), refusing invalid UTF-8.
fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::BadRequest("metadata filter is not UTF-8".into()))
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn parse_list_query(q: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut out = ListQuery {
        running: true,
        paused: true,
        limit: MAX_LIST_PAGE,
        ..Default::default()
    };
    for (k, v) in form_urlencoded_pairs(q.unwrap_or("")) {
        match k.as_str() {
            "metadata" => out.metadata = parse_metadata_filter(&v)?,
            "state" => {
                out.running = false;
                out.paused = false;
                for s in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match s {
                        "running" => out.running = true,
                        "paused" => out.paused = true,
                        other => {
                            return Err(ApiError::BadRequest(format!(
                                "unknown state {:?}: expected running or paused",
                                truncate(other, 32)
                            )));
                        }
                    }
                }
            }
            "template" => out.template = Some(v),
            "startedAfter" => {
                let t =
                    time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)
                        .map_err(|_| {
                            ApiError::BadRequest(format!(
                                "startedAfter {:?} is not an RFC 3339 time",
                                truncate(&v, 64)
                            ))
                        })?;
                out.started_after = Some((t.unix_timestamp_nanos() / 1_000_000) as i64);
            }
            "order" => {
                if !v.eq_ignore_ascii_case("asc") {
                    return Err(ApiError::BadRequest(format!(
                        "order {:?} is not supported: Paddock lists oldest first (asc)",
                        truncate(&v, 16)
                    )));
                }
            }
            "nextToken" => out.next = Some(v),
            "limit" => {
                out.limit = v.parse::<u32>().map_err(|_| {
                    ApiError::BadRequest(format!("limit {:?} is not a number", truncate(&v, 32)))
                })?;
                if out.limit == 0 || out.limit > MAX_LIST_PAGE {
                    return Err(ApiError::BadRequest(format!(
                        "limit must be between 1 and {MAX_LIST_PAGE}"
                    )));
                }
            }
            other => return Err(crate::wire::unknown_param(other)),
        }
    }
    if let Some(n) = &out.next
        && n.parse::<paddock_core::SandboxId>().is_err()
    {
        return Err(ApiError::BadRequest(
            "nextToken is not one Paddock gave".into(),
        ));
    }
    Ok(out)
}

/// One page of the caller's running sandboxes and the token of the next page.
async fn list_page(
    state: &AppState,
    caller: &Caller,
    q: &ListQuery,
    domain: &str,
) -> Result<(Vec<ListedSandbox>, Option<String>), ApiError> {
    let states: Vec<SandboxState> = [
        (q.running, SandboxState::Running),
        (q.paused, SandboxState::Paused),
    ]
    .into_iter()
    .filter_map(|(on, s)| on.then_some(s))
    .collect();
    if states.is_empty() {
        return Ok((Vec::new(), None));
    }
    let mut f = SandboxFilter {
        tenant: Some(caller.tenant().to_owned()),
        states,
        metadata: q.metadata.clone(),
        after: q.next.clone(),
        limit: Some(q.limit),
        ..Default::default()
    };
    if caller.key.role == paddock_store::Role::Developer {
        f.key_id = Some(caller.key.id.clone());
    }
    let rows = state.store.list_sandboxes(&f).await?;
    let next = (rows.len() == q.limit as usize)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    let items = rows
        .iter()
        .filter(|r| q.template.as_ref().is_none_or(|t| &r.template == t))
        .filter(|r| {
            q.started_after
                .is_none_or(|t| r.ready_at.unwrap_or(r.created_at) > t)
        })
        .map(|r| ListedSandbox::of(r, None, domain))
        .collect();
    Ok((items, next))
}

/// `GET /v2/sandboxes`: paged by `X-Next-Token` (absent on the last page).
pub(super) async fn list_v2(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> E2bResult<Response> {
    let q = parse_list_query(q.as_deref())?;
    let (items, next) = list_page(&state, &caller, &q, &sdk_domain(&state, &headers)).await?;
    let mut resp = json_status(StatusCode::OK, &items);
    if let Some(n) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        resp.headers_mut().insert("x-next-token", n);
    }
    Ok(resp)
}

/// `GET /sandboxes`: the old unpaged list (`metadata` filter only).
pub(super) async fn list_v1(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> E2bResult<Response> {
    let mut query = parse_list_query(q.as_deref())?;
    let domain = sdk_domain(&state, &headers);
    let mut all = Vec::new();
    loop {
        let (items, next) = list_page(&state, &caller, &query, &domain).await?;
        all.extend(items);
        match next {
            Some(n) => query.next = Some(n),
            None => break,
        }
    }
    Ok(json_status(StatusCode::OK, &all))
}

/// `GET /sandboxes/{id}/metrics?start=&end=` (unix seconds, both optional): the sandbox's
/// samples in that window, oldest first, taken every `--metrics-interval` (5 s) by
/// [`paddock_service::usage`], plus one taken now. `cpuUsedPct` is the CPU use since the previous
/// sample (the first: since the sandbox was created), in percent of its CPU allowance;
/// `diskUsed` is measured now and given to every sample.
pub(super) async fn metrics(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> E2bResult<Response> {
    let (mut start, mut end) = (i64::MIN, i64::MAX);
    for (k, v) in form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        let t = v
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("{k} must be a unix time in seconds")));
        match k.as_str() {
            "start" => start = t?,
            "end" => end = t?,
            _ => return Err(crate::wire::unknown_param(&k).into()),
        }
    }
    let (r, s) = state.sandbox_for(&caller, &id).await.map_err(|e| match e {
        paddock_service::Error::Conflict(_) => ApiError::sandbox_not_found(&id),
        e => e.into(),
    })?;
    let rt = state.runtime.clone();
    let now_stats = tokio::task::spawn_blocking(move || s.stats(&rt))
        .await
        .map_err(|e| ApiError::Internal(format!("stats task: {e}")))?;
    let mut series = state.usage.series(&id);
    series.push(paddock_service::usage::Sample {
        at_ms: now_ms(),
        cpu_ns: now_stats.cpu_usage_ns,
        mem_bytes: now_stats.memory_bytes,
        ..Default::default()
    });
    let cpu_millis = u64::from(r.spec.cpu_millis.unwrap_or(0));
    // The record is made before the sandbox exists, so every sample comes after it (the
    // sampler can see a sandbox before it is marked ready).
    let mut prev = paddock_service::usage::Sample {
        at_ms: r.created_at,
        ..Default::default()
    };
    let mut out = Vec::new();
    for x in series {
        let pct = paddock_service::usage::cpu_pct(
            x.cpu_ns.saturating_sub(prev.cpu_ns),
            x.at_ms - prev.at_ms,
            cpu_millis,
        );
        prev = x;
        let unix = x.at_ms / 1000;
        if unix < start || unix > end {
            continue;
        }
        out.push(SandboxMetric {
            cpu_count: cpu_count(&r),
            cpu_used_pct: pct,
            disk_total: r.spec.disk_bytes.unwrap_or(0),
            disk_used: now_stats.disk_bytes.unwrap_or(0),
            mem_cache: 0,
            mem_total: r.spec.memory_bytes.unwrap_or(0),
            mem_used: x.mem_bytes,
            timestamp: rfc3339(Some(x.at_ms)),
            timestamp_unix: unix,
        });
    }
    Ok(json_status(StatusCode::OK, &out))
}
