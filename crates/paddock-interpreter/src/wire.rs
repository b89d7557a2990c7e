//! The events of an execution, one JSON object a line, as the SDKs parse them
//! (`e2b_code_interpreter.models.parse_output`, `parseOutput` of `@e2b/code-interpreter`).

use serde::Serialize;
use serde_json::{Map, Value};

/// One line of an `/execute` stream.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Text the code wrote to stdout (`timestamp`: Unix epoch in nanoseconds).
    Stdout {
        /// The text, as the kernel sent it (not split into lines).
        text: String,
        /// When the server got it.
        timestamp: i64,
    },
    /// Text the code wrote to stderr.
    Stderr {
        /// The text.
        text: String,
        /// When the server got it.
        timestamp: i64,
    },
    /// A result: the cell's value (`is_main_result`) or a display (a plot, a table).
    Result(Box<ResultData>),
    /// The code raised.
    Error {
        /// The exception's type, e.g. `NameError`.
        name: String,
        /// Its message.
        value: String,
        /// The traceback, lines joined by newlines (with the kernel's ANSI colours).
        traceback: String,
    },
    /// The kernel's execution counter for this cell.
    NumberOfExecutions {
        /// The counter.
        execution_count: i64,
    },
    /// The execution is over: always the last line of a stream.
    EndOfExecution,
}

/// A MIME bundle mapped to the SDK's `Result` fields.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResultData {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    markdown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    svg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    png: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jpeg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pdf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    json: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    javascript: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chart: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extra: Option<Map<String, Value>>,
    is_main_result: bool,
}

/// The MIME type under which a kernel-side formatter may put E2B chart data.
pub(crate) const CHART_MIME: &str = "application/vnd.e2b.chart+json";
/// The MIME type under which a kernel-side formatter may put E2B table data.
pub(crate) const DATA_MIME: &str = "application/vnd.e2b.data+json";

impl ResultData {
    /// Maps a Jupyter MIME bundle (`data` of `execute_result`/`display_data`).
    pub fn from_bundle(bundle: Map<String, Value>, is_main_result: bool) -> ResultData {
        let mut r = ResultData {
            is_main_result,
            ..ResultData::default()
        };
        let mut extra = Map::new();
        for (mime, value) in bundle {
            let text = || match &value {
                Value::String(s) => Some(s.clone()),
                Value::Array(parts) => Some(
                    parts
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .concat(),
                ),
                other => Some(other.to_string()),
            };
            match mime.as_str() {
                "text/plain" => r.text = text(),
                "text/html" => r.html = text(),
                "text/markdown" => r.markdown = text(),
                "image/svg+xml" => r.svg = text(),
                "image/png" => r.png = text().map(|s| s.replace('\n', "")),
                "image/jpeg" => r.jpeg = text().map(|s| s.replace('\n', "")),
                "application/pdf" => r.pdf = text(),
                "text/latex" => r.latex = text(),
                "application/json" => r.json = Some(value),
                "application/javascript" => r.javascript = text(),
                CHART_MIME => r.chart = Some(value),
                DATA_MIME => r.data = Some(value),
                _ => {
                    extra.insert(mime, value);
                }
            }
        }
        if !extra.is_empty() {
            r.extra = Some(extra);
        }
        r
    }

    /// Bytes this result adds to the execution's output.
    pub fn size(&self) -> usize {
        serde_json::to_vec(self).map(|v| v.len()).unwrap_or(0)
    }

    /// The text representation, if any.
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_map_to_sdk_fields() {
        let bundle = serde_json::json!({
            "text/plain": "1",
            "text/html": ["<b>", "1</b>"],
            "image/png": "aGk=\n",
            "application/json": {"a": 1},
            "application/x-custom": "z",
        });
        let Value::Object(b) = bundle else {
            unreachable!()
        };
        let r = ResultData::from_bundle(b, true);
        let v = serde_json::to_value(Event::Result(Box::new(r))).unwrap();
        assert_eq!(v["type"], "result");
        assert_eq!(v["text"], "1");
        assert_eq!(v["html"], "<b>1</b>");
        assert_eq!(v["png"], "aGk=");
        assert_eq!(v["json"]["a"], 1);
        assert_eq!(v["extra"]["application/x-custom"], "z");
        assert_eq!(v["is_main_result"], true);
    }

    #[test]
    fn end_is_snake_case() {
        let v = serde_json::to_value(Event::EndOfExecution).unwrap();
        assert_eq!(v, serde_json::json!({"type": "end_of_execution"}));
        let v = serde_json::to_value(Event::NumberOfExecutions { execution_count: 3 }).unwrap();
        assert_eq!(v["type"], "number_of_executions");
    }
}
