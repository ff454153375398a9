//! The `/_sim/` control API: JSON, no authentication, not counted as AWS calls.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Value};

use crate::alarms::AlarmState;
use crate::catalog::PatchRelease;
use crate::clock::{epoch_seconds, to_datetime};
use crate::fleet::{AgentState, InstanceView};
use crate::hooks::rules_from_json;
use crate::locks::lock;
use crate::partitions::Shared;
use crate::platform::Platform;
use crate::world::{ControlError, World};

fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

fn control_error(e: ControlError) -> Response {
    let status = match e {
        ControlError::UnknownInstance(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.to_string())
}

fn clock_json(world: &mut World) -> Value {
    let now = world.sync();
    json!({
        "now": to_datetime(now).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "epoch_seconds": epoch_seconds(now),
        "start": to_datetime(world.start_ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "time_scale": world.time_scale(),
    })
}

fn parse_body(body: &[u8]) -> Result<Value, String> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))
}

/// One jump at most ten years, so a typo cannot keep the server busy processing ticks.
const MAX_ADVANCE_SECONDS: f64 = 315_360_000.0;

const ENDPOINTS: [&str; 22] = [
    "GET  /_sim/stats",
    "GET  /_sim/clock",
    "POST /_sim/clock {\"time_scale\": X}",
    "POST /_sim/clock/advance {\"seconds\": N}",
    "GET  /_sim/faults",
    "POST /_sim/faults {partial fault settings}",
    "POST /_sim/patches/release {\"os\": \"AMAZON_LINUX_2\", \"severity\": \"Critical\", ...}",
    "GET  /_sim/instances[?account=ACCOUNT&region=REGION]",
    "GET  /_sim/instances/{id}",
    "POST /_sim/instances/{id}/agent {\"state\": \"Online\"|\"ConnectionLost\", \"after_reboot\": \"lost\"|\"returns\"}",
    "POST /_sim/instances/{id}/state {\"state\": \"running\"|\"stopped\"}",
    "GET  /_sim/commands",
    "GET  /_sim/events",
    "POST /_sim/events/fail {\"entries\": N}",
    "GET  /_sim/alarms[?account=ACCOUNT&region=REGION]",
    "PUT  /_sim/alarms/{name}[?account=ACCOUNT&region=REGION] {\"state\": \"OK\"|\"ALARM\"|\"INSUFFICIENT_DATA\"}",
    "GET  /_sim/hook-outcomes",
    "PUT  /_sim/hook-outcomes [{\"contains\": \"drain\", \"instance_ids\": [\"i-...\"], \"exit_code\": 1, \"output\": \"...\"}]",
    "DELETE /_sim/hook-outcomes",
    "GET  /_sim/s3",
    "GET  /_sim/s3/{bucket}",
    "GET  /_sim/s3/{bucket}/{key}",
];

/// The (account, region) of `?account=…&region=…`; a missing parameter means the primary's.
fn partition_named(shared: &Shared, query: &str) -> (String, String) {
    let mut account = None;
    let mut region = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "account" => account = Some(value.into_owned()),
            "region" => region = Some(value.into_owned()),
            _ => {}
        }
    }
    (
        account.unwrap_or_else(|| shared.primary_account.clone()),
        region.unwrap_or_else(|| shared.primary_region.clone()),
    )
}

/// `GET /_sim/s3[/bucket[/key]]`: every bucket, a bucket's objects, or an object's body (with
/// its Content-Type), whoever owns them.
fn s3_view(shared: &Shared, path: &str, segments: &[&str]) -> Response {
    let s3 = shared.s3();
    let Some(bucket_name) = segments.first() else {
        let buckets: Vec<Value> = s3
            .buckets
            .iter()
            .map(|(name, b)| json!({"name": name, "owner": b.owner, "region": b.region, "objects": b.objects.len()}))
            .collect();
        return json_response(StatusCode::OK, &json!({ "buckets": buckets }));
    };
    let Some(bucket_name) = crate::s3::percent_decode(bucket_name) else {
        return error(StatusCode::BAD_REQUEST, "the bucket name is not valid percent-encoding");
    };
    let Some(bucket) = s3.buckets.get(&bucket_name) else {
        return error(StatusCode::NOT_FOUND, format!("no bucket {bucket_name}"));
    };
    if segments.len() == 1 {
        let objects: Vec<Value> = bucket
            .objects
            .iter()
            .map(|(key, o)| {
                json!({
                    "key": key,
                    "size": o.body.len(),
                    "etag": o.etag,
                    "content_type": o.content_type,
                    "last_modified": to_datetime(o.last_modified_ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                })
            })
            .collect();
        return json_response(
            StatusCode::OK,
            &json!({"name": bucket_name, "owner": bucket.owner, "region": bucket.region, "objects": objects}),
        );
    }
    // The key is everything after the bucket, slashes included, as in S3's own paths.
    let raw_key = path.trim_start_matches("/_sim/s3/").split_once('/').map_or("", |(_, k)| k);
    let Some(key) = crate::s3::percent_decode(raw_key) else {
        return error(StatusCode::BAD_REQUEST, "the key is not valid percent-encoding");
    };
    match bucket.objects.get(&key) {
        Some(object) => {
            let mut response = Response::new(Body::from(object.body.clone()));
            if let Ok(value) = HeaderValue::from_str(&object.content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        }
        None => error(StatusCode::NOT_FOUND, format!("no object {key} in bucket {bucket_name}")),
    }
}

/// `GET /_sim/instances?account=…&region=…`: one partition's instances.
fn partition_instances(shared: &Shared, query: &str) -> Response {
    let (account, region) = partition_named(shared, query);
    let views: Vec<InstanceView> = match shared.existing(&account, &region) {
        Some(world) => {
            let mut world = lock(&world);
            world.sync();
            world.instances.iter().map(InstanceView::of).collect()
        }
        None => Vec::new(),
    };
    json_response(StatusCode::OK, &views)
}

pub(crate) fn handle(shared: &Shared, method: &Method, path: &str, query: &str, body: &[u8]) -> Response {
    let segments: Vec<&str> = path.trim_start_matches("/_sim").split('/').filter(|s| !s.is_empty()).collect();
    let body = match parse_body(body) {
        Ok(value) => value,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    // The clock is every partition's, so these must not run under the primary's lock.
    match (method.clone(), segments.as_slice()) {
        (Method::POST, ["clock"]) => {
            return match body.get("time_scale").and_then(Value::as_f64) {
                Some(scale) if scale.is_finite() && scale >= 0.0 => {
                    shared.set_time_scale(scale);
                    json_response(StatusCode::OK, &clock_json(&mut shared.world()))
                }
                _ => error(StatusCode::BAD_REQUEST, "give {\"time_scale\": X} with X at least 0"),
            }
        }
        (Method::POST, ["clock", "advance"]) => {
            let seconds = body.get("seconds").and_then(Value::as_f64);
            return match seconds {
                Some(s) if s.is_finite() && (0.0..=MAX_ADVANCE_SECONDS).contains(&s) => {
                    shared.advance((s * 1000.0) as i64);
                    json_response(StatusCode::OK, &clock_json(&mut shared.world()))
                }
                _ => error(
                    StatusCode::BAD_REQUEST,
                    format!("give {{\"seconds\": N}} with N between 0 and {MAX_ADVANCE_SECONDS} (ten years); advance in steps"),
                ),
            };
        }
        (Method::GET, ["instances"]) if !query.is_empty() => return partition_instances(shared, query),
        (Method::GET, ["alarms"]) => {
            let (account, region) = partition_named(shared, query);
            let alarms = shared.existing(&account, &region).map(|w| lock(&w).alarms()).unwrap_or_default();
            return json_response(StatusCode::OK, &json!({ "alarms": alarms }));
        }
        (Method::PUT, ["alarms", name]) => return put_alarm(shared, query, name, &body),
        (Method::GET, ["s3", rest @ ..]) => return s3_view(shared, path, rest),
        (Method::GET, ["commands"]) => {
            let mut all = Vec::new();
            shared.for_each_world(|world| all.extend(world.command_history()));
            return json_response(StatusCode::OK, &json!({ "commands": all }));
        }
        _ => {}
    }
    let mut world = shared.world();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, []) => json_response(StatusCode::OK, &json!({ "endpoints": ENDPOINTS })),
        (Method::GET, ["stats"]) => json_response(StatusCode::OK, &world.stats()),
        (Method::GET, ["clock"]) => json_response(StatusCode::OK, &clock_json(&mut world)),
        (Method::GET, ["faults"]) => json_response(StatusCode::OK, &world.faults),
        (Method::POST, ["faults"]) => match world.faults.merged(&body) {
            Ok(faults) => match world.set_faults(faults) {
                Ok(()) => json_response(StatusCode::OK, &world.faults),
                Err(e) => control_error(e),
            },
            Err(problems) => error(StatusCode::BAD_REQUEST, problems.join("; ")),
        },
        (Method::GET, ["events"]) => json_response(StatusCode::OK, &json!({ "events": shared.bus().events })),
        (Method::POST, ["events", "fail"]) => match body.get("entries").and_then(Value::as_u64) {
            Some(n) => {
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                shared.bus().fail_entries = n;
                json_response(StatusCode::OK, &json!({ "fail_entries": n }))
            }
            None => {
                error(StatusCode::BAD_REQUEST, "give {\"entries\": N}: the next N PutEvents entries fail")
            }
        },
        (Method::POST, ["patches", "release"]) => match release_from_json(&mut world, &body) {
            Ok(value) => json_response(StatusCode::OK, &value),
            Err(message) => error(StatusCode::BAD_REQUEST, message),
        },
        (Method::GET, ["instances"]) => {
            world.sync();
            let views: Vec<InstanceView> = world.instances.iter().map(InstanceView::of).collect();
            json_response(StatusCode::OK, &views)
        }
        (Method::GET, ["instances", id]) => {
            world.sync();
            match world.instance(id) {
                Some(instance) => json_response(StatusCode::OK, &InstanceView::of(instance)),
                None => control_error(ControlError::UnknownInstance(id.to_string())),
            }
        }
        (Method::POST, ["instances", id, "agent"]) => {
            const USAGE: &str = "give {\"state\": \"Online\"|\"ConnectionLost\"} and/or {\"after_reboot\": \"lost\"|\"returns\"}";
            let state = match body.get("state") {
                None => None,
                Some(Value::String(s)) if s == "Online" => Some(AgentState::Online),
                Some(Value::String(s)) if s == "ConnectionLost" => Some(AgentState::ConnectionLost),
                Some(_) => return error(StatusCode::BAD_REQUEST, USAGE),
            };
            let lost = match body.get("after_reboot") {
                None => None,
                Some(Value::String(s)) if s == "lost" => Some(true),
                Some(Value::String(s)) if s == "returns" => Some(false),
                Some(_) => return error(StatusCode::BAD_REQUEST, USAGE),
            };
            let unknown =
                body.as_object().and_then(|o| o.keys().find(|k| *k != "state" && *k != "after_reboot"));
            if (state.is_none() && lost.is_none()) || unknown.is_some() {
                return error(StatusCode::BAD_REQUEST, USAGE);
            }
            // The mark first: with both, an agent set Online stays marked for the next reboot.
            let outcome = lost
                .map_or(Ok(()), |lost| world.set_lost_after_reboot(id, lost))
                .and_then(|()| state.map_or(Ok(()), |state| world.set_agent(id, state)));
            match outcome {
                Ok(()) => json_response(StatusCode::OK, &world.instance(id).map(InstanceView::of)),
                Err(e) => control_error(e),
            }
        }
        (Method::GET, ["hook-outcomes"]) => {
            json_response(StatusCode::OK, &json!({ "rules": world.hook_rules() }))
        }
        (Method::PUT, ["hook-outcomes"]) => match rules_from_json(&body) {
            Ok(rules) => match world.set_hook_rules(rules) {
                Ok(()) => json_response(StatusCode::OK, &json!({ "rules": world.hook_rules() })),
                Err(e) => control_error(e),
            },
            Err(problems) => error(StatusCode::BAD_REQUEST, problems.join("; ")),
        },
        (Method::DELETE, ["hook-outcomes"]) => match world.set_hook_rules(Vec::new()) {
            Ok(()) => json_response(StatusCode::OK, &json!({ "rules": [] })),
            Err(e) => control_error(e),
        },
        (Method::POST, ["instances", id, "state"]) => {
            let running = match body.get("state").and_then(Value::as_str) {
                Some("running") => true,
                Some("stopped") => false,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "give {\"state\": \"running\"} or {\"state\": \"stopped\"}",
                    )
                }
            };
            match world.set_running(id, running) {
                Ok(()) => json_response(StatusCode::OK, &world.instance(id).map(InstanceView::of)),
                Err(e) => control_error(e),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no control endpoint {method} {path}; GET /_sim/ lists them"),
        ),
    }
}

/// `PUT /_sim/alarms/{name}`: creates or sets an alarm in the partition the query names,
/// making the partition if it is new (as an AWS call to it would).
fn put_alarm(shared: &Shared, query: &str, name: &str, body: &Value) -> Response {
    let Some(name) = percent_decode(name) else {
        return error(StatusCode::BAD_REQUEST, "the alarm name is not valid percent-encoded UTF-8");
    };
    let state = match body.get("state").and_then(Value::as_str).and_then(AlarmState::parse) {
        Some(state) => state,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("give {{\"state\": S}} with S one of {}", AlarmState::NAMES.join(", ")),
            )
        }
    };
    let (account, region) = partition_named(shared, query);
    let world = shared.partition(&account, &region);
    let mut world = lock(&world);
    match world.set_alarm(&name, state) {
        Ok(()) => {
            let view = world.alarms().into_iter().find(|a| a.name == name);
            json_response(StatusCode::OK, &view)
        }
        Err(e) => control_error(e),
    }
}

/// A path segment's `%XX` escapes decoded; alarm names may hold spaces and slashes.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = segment.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// Releases a patch through the control API's body.
fn release_from_json(world: &mut World, body: &serde_json::Value) -> Result<serde_json::Value, String> {
    let os = body
        .get("os")
        .and_then(|v| v.as_str())
        .ok_or("give \"os\", e.g. AMAZON_LINUX_2 or amazon-linux-2")?;
    let platform = Platform::from_operating_system(os)
        .or_else(|| Platform::from_scenario_name(os))
        .ok_or_else(|| {
            format!(
                "unknown os {os}; use one of {}",
                Platform::ALL.iter().map(|p| p.operating_system()).collect::<Vec<_>>().join(", ")
            )
        })?;
    let text = |key: &str| body.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let cves = match body.get("cves") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or("cves must be strings")?,
        ),
        Some(_) => return Err("cves must be a list of strings".into()),
    };
    let release = PatchRelease {
        severity: text("severity"),
        classification: text("classification"),
        cves,
        package: text("package"),
        title: text("title"),
        needs_reboot: body.get("reboot").and_then(|v| v.as_bool()),
    };
    let id = world.release_patch(platform, &release);
    let patch = world.catalog.find(&id).ok_or("the patch vanished")?;
    Ok(serde_json::json!({
        "id": id,
        "os": platform.operating_system(),
        "title": patch.title,
        "classification": patch.classification,
        "severity": patch.severity,
        "cves": patch.cves,
        "reboot": patch.needs_reboot,
        "released": to_datetime(patch.released_ms).to_rfc3339(),
    }))
}
