//! `run_code`'s answer: the NDJSON events of `POST /v1/sandboxes/{id}/code` (one JSON object
//! a line, typed `stdout`, `stderr`, `result`, `error` and a final `end`) folded into one
//! tool result: text for a model, PNG/JPEG results as images, all capped
//! ([`RUN_CODE_CAP`], [`RUN_CODE_IMAGES`], [`RUN_CODE_IMAGE_BYTES`]).

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Map, Value, json};

use crate::backend::ApiResponse;
use crate::limits::{RUN_CODE_CAP, RUN_CODE_IMAGE_BYTES, RUN_CODE_IMAGES};

/// Whether a tool error is the API's answer for a route it does not have (a server from
/// before the code interpreter).
pub(crate) fn is_missing_route(e: &CallToolResult) -> bool {
    e.structured_content
        .as_ref()
        .is_some_and(|v| v["error"]["status"] == 404 && v["error"]["message"] == "no such route")
}

/// Text accumulated under a byte budget shared by every part of the answer.
struct Budget {
    left: usize,
    cut: bool,
}

impl Budget {
    fn take(&mut self, s: &str) -> String {
        if s.len() <= self.left {
            self.left -= s.len();
            return s.to_owned();
        }
        self.cut = true;
        let mut end = self.left;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.left = 0;
        s[..end].to_owned()
    }
}

/// The text of an event field that may be a string or a list of strings (tracebacks).
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

/// The data of an output event: `data`, else `text`, else `line`.
fn event_text(e: &Value) -> String {
    ["data", "text", "line"]
        .iter()
        .find_map(|k| text_of(&e[*k]))
        .unwrap_or_default()
}

/// MIME keys of a result bundle, by the short names E2B uses and by MIME type.
const TEXT_KINDS: [(&str, &str); 6] = [
    ("text", "text/plain"),
    ("html", "text/html"),
    ("markdown", "text/markdown"),
    ("json", "application/json"),
    ("latex", "text/latex"),
    ("svg", "image/svg+xml"),
];
const IMAGE_KINDS: [(&str, &str); 2] = [("png", "image/png"), ("jpeg", "image/jpeg")];

/// The MIME bundle of a `result` event: the event itself when it carries the formats at its
/// top level (E2B's `/execute` lines: `{"type":"result","text":..,"png":..}`, where `data`
/// is the JSON-data format), else its `data` object (a Jupyter-style `{"data": {mime: ..}}`).
fn bundle(e: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let Some(top) = e.as_object() else {
        return EMPTY.get_or_init(Map::new);
    };
    match e["data"].as_object() {
        Some(d) if !flat(top) => d,
        _ => top,
    }
}

/// Whether a `result` event carries its formats at its top level (E2B's form).
fn flat(top: &Map<String, Value>) -> bool {
    TEXT_KINDS
        .iter()
        .chain(IMAGE_KINDS.iter())
        .any(|(short, _)| top.contains_key(*short))
}

/// Folds the NDJSON stream into the tool result.
pub(crate) fn result(resp: &ApiResponse) -> CallToolResult {
    let mut budget = Budget {
        left: RUN_CODE_CAP,
        cut: false,
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut results = Vec::new();
    let mut error = Value::Null;
    let mut end = Value::Null;
    let mut images = Vec::new();
    let mut images_left_out = 0usize;
    let text = String::from_utf8_lossy(&resp.body);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match e["type"].as_str().unwrap_or("") {
            "stdout" => stdout.push_str(&budget.take(&event_text(&e))),
            "stderr" => stderr.push_str(&budget.take(&event_text(&e))),
            "result" => {
                let b = bundle(&e);
                let mut r = Map::new();
                for (short, mime) in TEXT_KINDS {
                    let Some(v) = b.get(short).or_else(|| b.get(mime)) else {
                        continue;
                    };
                    // `json` is any JSON value (an array too): its JSON text.
                    let t = match v {
                        Value::String(s) => s.clone(),
                        _ if short == "json" => v.to_string(),
                        _ => match text_of(v) {
                            Some(t) => t,
                            None => continue,
                        },
                    };
                    r.insert(short.to_owned(), json!(budget.take(&t)));
                }
                // Chart data (`chart`, from a matplotlib figure) and a DataFrame's table data
                // (`data` beside the top-level formats): JSON text, as `json`.
                if let Some(c) = e.get("chart").filter(|c| c.is_object()) {
                    r.insert("chart".into(), json!(budget.take(&c.to_string())));
                }
                if let Some(d) = e.get("data").filter(|d| d.is_object())
                    && e.as_object().is_some_and(flat)
                {
                    r.insert("data".into(), json!(budget.take(&d.to_string())));
                }
                for (short, mime) in IMAGE_KINDS {
                    if let Some(data) = b.get(short).or_else(|| b.get(mime)).and_then(Value::as_str)
                    {
                        if images.len() < RUN_CODE_IMAGES
                            && data.len() <= RUN_CODE_IMAGE_BYTES * 4 / 3 + 4
                        {
                            images.push(ContentBlock::image(data.to_owned(), mime));
                            r.insert(short.to_owned(), json!(format!("<image {}>", images.len())));
                        } else {
                            images_left_out += 1;
                            r.insert(short.to_owned(), json!("<image left out: over the cap>"));
                        }
                    }
                }
                if let Some(v) = b.get("is_main_result").or_else(|| e.get("is_main_result")) {
                    r.insert("is_main_result".into(), v.clone());
                }
                results.push(Value::Object(r));
            }
            "error" => {
                let src = e["error"].as_object().map_or(&e, |_| &e["error"]);
                error = json!({
                    "name": src["name"],
                    "value": src["value"].as_str().map(|v| budget.take(v)),
                    "traceback": text_of(&src["traceback"]).map(|t| budget.take(&t)),
                });
            }
            // `end_of_execution` is the interpreter's own name for the last line.
            "end" | "end_of_execution" => end = e,
            _ => {}
        }
    }
    let mut out = json!({
        "stdout": stdout,
        "stderr": stderr,
        "results": results,
    });
    if !error.is_null() {
        out["error"] = error.clone();
    }
    if budget.cut || resp.truncated {
        out["truncated"] = json!(true);
    }
    if images_left_out > 0 {
        out["images_left_out"] = json!(images_left_out);
    }
    if end.is_null() && !resp.truncated {
        out["incomplete"] = json!(true);
    } else if let Some(ms) = end.get("duration_ms") {
        out["duration_ms"] = ms.clone();
    }
    let mut r = if error.is_null() {
        CallToolResult::structured(out)
    } else {
        CallToolResult::structured_error(out)
    };
    r.content.extend(images);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(lines: &[Value]) -> ApiResponse {
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        ApiResponse {
            status: 200,
            content_type: "application/x-ndjson".into(),
            body: body.into(),
            truncated: false,
        }
    }

    #[test]
    fn events_fold_into_one_result() {
        let r = result(&resp(&[
            json!({"type": "stdout", "data": "a\n"}),
            json!({"type": "stdout", "text": "b\n"}),
            json!({"type": "result", "data": {"text/plain": "42", "image/png": "iVBO"}, "is_main_result": true}),
            json!({"type": "result", "text": "<DataFrame>", "html": "<table/>", "data": {"a": 1}}),
            json!({"type": "end"}),
        ]));
        assert_eq!(r.is_error, Some(false));
        let v = r.structured_content.clone().unwrap_or_default();
        assert_eq!(v["stdout"], "a\nb\n");
        assert_eq!(v["results"][0]["text"], "42");
        assert_eq!(v["results"][0]["png"], "<image 1>");
        assert_eq!(r.content.len(), 2);
        assert_eq!(v["results"][1]["text"], "<DataFrame>");
        assert_eq!(v["results"][1]["html"], "<table/>");
    }

    #[test]
    fn json_and_table_data_come_as_json_text() {
        let r = result(&resp(&[
            json!({"type": "result", "text": "[ 3, 6 ]", "json": [3, 6], "is_main_result": true}),
            json!({"type": "result", "text": "<DataFrame>", "json": {"k": [1]}, "data": {"a": [1, 2]}}),
            json!({"type": "end"}),
        ]));
        let v = r.structured_content.unwrap_or_default();
        assert_eq!(v["results"][0]["json"], "[3,6]", "{v}");
        assert_eq!(v["results"][1]["json"], r#"{"k":[1]}"#, "{v}");
        // A DataFrame's table data, as JSON text too.
        assert_eq!(v["results"][1]["data"], r#"{"a":[1,2]}"#, "{v}");
    }

    #[test]
    fn chart_data_comes_as_json_text() {
        let chart = json!({"type": "bar", "title": "T", "elements": [{"label": "a", "group": "", "value": 2.0}]});
        let r = result(&resp(&[
            json!({"type": "result", "text": "<Figure>", "png": "iVBO", "chart": chart}),
            json!({"type": "end"}),
        ]));
        let v = r.structured_content.unwrap_or_default();
        let got: Value = serde_json::from_str(v["results"][0]["chart"].as_str().unwrap()).unwrap();
        assert_eq!(got, chart);
    }

    #[test]
    fn an_error_event_is_a_tool_error_and_text_is_capped() {
        let big = "x".repeat(RUN_CODE_CAP + 10);
        let r = result(&resp(&[
            json!({"type": "stdout", "data": big}),
            json!({"type": "error", "name": "ZeroDivisionError", "value": "division by zero", "traceback": ["l1", "l2"]}),
            json!({"type": "end"}),
        ]));
        assert_eq!(r.is_error, Some(true));
        let v = r.structured_content.unwrap_or_default();
        assert_eq!(v["truncated"], true);
        assert_eq!(v["stdout"].as_str().map(str::len), Some(RUN_CODE_CAP));
        assert_eq!(v["error"]["name"], "ZeroDivisionError");
    }
}
