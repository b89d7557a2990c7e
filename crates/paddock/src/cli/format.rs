//! Output formatting shared by the client commands: plain-text tables, short durations,
//! relative times, byte sizes and shell-style quoting.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A table printed with columns padded to their widest cell, two spaces apart.
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra ones dropped).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells.into_iter().map(|c| one_line(&c)).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in `\n`; the last column is not
    /// padded.
    pub(crate) fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                line.push_str(c);
                if i + 1 < n {
                    let pad = widths[i] - c.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Replaces control characters (newlines, tabs, escapes) with spaces, so a cell from the
/// server cannot break the table or drive the terminal.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `45s`, `5m`, `5m30s`, `2h`, `2h5m`, `1d3h`: the two largest units.
pub(crate) fn short_duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = secs;
    let mut used = 0;
    for (size, name) in UNITS {
        if rest >= size {
            out.push_str(&format!("{}{name}", rest / size));
            rest %= size;
            used += 1;
        } else if used > 0 {
            // Units are adjacent: `1d5m` would read oddly, so stop at the first gap.
            used += 1;
        }
        if used == 2 {
            break;
        }
    }
    out
}

/// Parses an RFC 3339 timestamp.
pub(crate) fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// `5m ago`, `in 2h`, `now`, relative to `now`.
pub(crate) fn relative(now: OffsetDateTime, t: OffsetDateTime) -> String {
    let secs = (t - now).whole_seconds();
    if secs.abs() < 1 {
        "now".into()
    } else if secs < 0 {
        format!("{} ago", short_duration(secs.unsigned_abs()))
    } else {
        format!("in {}", short_duration(secs.unsigned_abs()))
    }
}

/// A JSON timestamp (string or null) relative to `now`, or `-`.
pub(crate) fn relative_json(now: OffsetDateTime, v: &Value) -> String {
    match v.as_str() {
        Some(s) => parse_time(s).map_or_else(|| one_line(s), |t| relative(now, t)),
        None => "-".into(),
    }
}

/// `512 B`, `1.5 KiB`, `512 MiB`, `2 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if (v - v.round()).abs() < 0.05 {
        format!("{} {}", v.round(), UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A JSON value as a table cell: strings bare, null as `-`, others as JSON.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => one_line(s),
        other => other.to_string(),
    }
}

/// `k=v,k2=v2` of a JSON object (sorted as the server sent it), or `-`.
pub(crate) fn pairs(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".into(),
    }
}

/// Quotes one argument for a POSIX shell if it needs it.
pub(crate) fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A command as a JSON array of arguments or a string, for display.
pub(crate) fn command(v: &Value) -> String {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| shell_quote(&x.as_str().map_or_else(|| x.to_string(), str::to_owned)))
            .collect::<Vec<_>>()
            .join(" "),
        other => cell(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables() {
        let mut t = Table::new(&["ID", "STATE", "METADATA"]);
        t.row(vec!["sbx_1".into(), "running".into(), "a=b".into()]);
        t.row(vec!["sbx_long_id".into(), "stopped\n".into()]);
        assert_eq!(
            t.render(),
            "ID           STATE     METADATA\n\
             sbx_1        running   a=b\n\
             sbx_long_id  stopped\n"
        );
        assert_eq!(Table::new(&["A", "B"]).render(), "A  B\n");
    }

    #[test]
    fn durations() {
        assert_eq!(short_duration(0), "0s");
        assert_eq!(short_duration(45), "45s");
        assert_eq!(short_duration(300), "5m");
        assert_eq!(short_duration(330), "5m30s");
        assert_eq!(short_duration(7200), "2h");
        assert_eq!(short_duration(7500), "2h5m");
        assert_eq!(short_duration(7505), "2h5m");
        assert_eq!(short_duration(86400 + 3 * 3600 + 7), "1d3h");
        assert_eq!(short_duration(86400 + 300), "1d");
    }

    #[test]
    fn relative_times() {
        let now = parse_time("2025-01-01T12:00:00Z").unwrap();
        let t = |s: &str| parse_time(s).unwrap();
        assert_eq!(relative(now, t("2025-01-01T11:55:00Z")), "5m ago");
        assert_eq!(relative(now, t("2025-01-01T14:00:00.5Z")), "in 2h");
        assert_eq!(relative(now, t("2025-01-01T12:00:00.2Z")), "now");
        assert_eq!(relative_json(now, &json!(null)), "-");
        assert_eq!(
            relative_json(now, &json!("2025-01-01T12:00:30+00:00")),
            "in 30s"
        );
        assert_eq!(relative_json(now, &json!("garbage")), "garbage");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(512 << 20), "512 MiB");
        assert_eq!(bytes(2 << 30), "2 GiB");
    }

    #[test]
    fn cells_and_commands() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("a\tb")), "a b");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(pairs(&json!({})), "-");
        assert_eq!(pairs(&json!({"a": "1", "b": "x y"})), "a=1,b=x y");
        assert_eq!(
            command(&json!(["sh", "-c", "echo 'hi' there"])),
            r"sh -c 'echo '\''hi'\'' there'"
        );
        assert_eq!(command(&json!("ls -la")), "ls -la");
        assert_eq!(shell_quote(""), "''");
    }
}
