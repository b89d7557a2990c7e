//! The report parsers, one module per format, and the text helpers they share.

use crate::{MAX_KEEP, TestFailure};

mod go;
mod jest;
mod junit;
mod libtest;
mod pytest;
mod tap;
mod vitest;

pub(crate) use go::parse_go;
pub(crate) use jest::{parse_jest_json, parse_jest_text};
pub(crate) use junit::parse_junit;
pub(crate) use libtest::parse_libtest;
pub(crate) use pytest::parse_pytest_text;
pub(crate) use tap::parse_tap;
pub(crate) use vitest::parse_vitest_text;

/// Counts and failures from one parser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) passed: u32,
    pub(crate) failed: u32,
    pub(crate) skipped: u32,
    pub(crate) errors: u32,
    /// Failed tests, uncapped, in report order.
    pub(crate) failures: Vec<TestFailure>,
    /// Errors (tests that could not run, suites that did not load), in report order.
    pub(crate) errored: Vec<TestFailure>,
}

impl Parsed {
    pub(crate) fn fail(&mut self, f: TestFailure) {
        self.failed += 1;
        self.failures.push(f);
    }

    pub(crate) fn error(&mut self, f: TestFailure) {
        self.errors += 1;
        self.errored.push(f);
    }

    pub(crate) fn total(&self) -> u32 {
        self.passed + self.failed + self.skipped + self.errors
    }
}

/// The last `max` bytes of `s` (on a char boundary), marked when something was cut.
pub(crate) fn cap_tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[{start} bytes omitted]\n{}", &s[start..])
}

/// The first `max` bytes of `s` (on a char boundary), marked when something was cut.
pub(crate) fn cap_head(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [truncated]", &s[..end])
}

/// Appends `line` to a per-test buffer, keeping it bounded.
fn keep(buf: &mut String, line: &str) {
    buf.push_str(line);
    if buf.len() > 2 * MAX_KEEP {
        let mut cut = buf.len() - MAX_KEEP;
        while !buf.is_char_boundary(cut) {
            cut += 1;
        }
        buf.drain(..cut);
    }
}

/// Removes ANSI escape sequences (CSI and OSC) and other control characters but newlines
/// and tabs.
pub(crate) fn strip_ansi(s: &str) -> String {
    if !s.contains(['\x1b', '\r']) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\x1b' => match it.peek() {
                Some('[') => {
                    it.next();
                    // Parameters and intermediates, then one final byte in @..~.
                    for c in it.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    it.next();
                    // Until BEL or ST (ESC \).
                    while let Some(c) = it.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            it.next();
                            break;
                        }
                    }
                }
                _ => {
                    it.next();
                }
            },
            '\r' => {
                if it.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// `path` relative to `cwd` when it is inside it.
fn relative(path: &str, cwd: &str) -> String {
    let base = cwd.trim_end_matches('/');
    path.strip_prefix(base)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|r| !r.is_empty())
        .unwrap_or(path)
        .to_owned()
}

/// The first path under `cwd` mentioned in `text` (a stack frame, usually) that is not in
/// `node_modules`.
fn path_in(text: &str, cwd: &str) -> Option<String> {
    let base = format!("{}/", cwd.trim_end_matches('/'));
    let mut rest = text;
    while let Some(i) = rest.find(&base) {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c == ':' || c == ')' || c == '\'' || c == '"' || c.is_whitespace())
            .unwrap_or(tail.len());
        let path = &tail[..end];
        let name = path.rsplit('/').next().unwrap_or_default();
        if !path.contains("/node_modules/") && name.contains('.') {
            return Some(relative(path, cwd));
        }
        rest = &tail[end..];
    }
    None
}

/// Strips a trailing `:line` or `:line:col` from a location.
fn strip_line_col(loc: &str) -> &str {
    let mut s = loc;
    for _ in 0..2 {
        match s.rsplit_once(':') {
            Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => {
                s = head;
            }
            _ => break,
        }
    }
    s
}

/// The message part of a failure text: everything before the first stack frame line.
fn message_before_stack(text: &str) -> Option<String> {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| {
            let t = l.trim_start();
            !(t.starts_with("at ") || t.starts_with("❯ "))
        })
        .collect();
    let m = lines.join("\n").trim().to_owned();
    (!m.is_empty()).then_some(m)
}

/// Parses `N word, N word` counts (`1 failed, 2 passed`, `1 failed | 2 passed`), calling
/// `f(word, n)` for each; returns whether any count was found.
fn parse_counts(s: &str, seps: &[char], mut f: impl FnMut(&str, u32)) -> bool {
    let mut any = false;
    for part in s.split(seps) {
        let mut words = part.split_whitespace();
        if let (Some(n), Some(word)) = (words.next(), words.next())
            && let Ok(n) = n.parse::<u32>()
        {
            f(word, n);
            any = true;
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn text_helpers() {
        assert_eq!(
            strip_ansi("\x1b[1m\x1b[31mA\x1b[39m\x1b]8;;url\x07B\r\n"),
            "AB\n"
        );
        assert_eq!(
            relative("/home/user/proj/a/b.py", "/home/user/proj/"),
            "a/b.py"
        );
        assert_eq!(relative("/elsewhere/b.py", CWD), "/elsewhere/b.py");
        assert_eq!(strip_line_col("src/lib.rs:14:43"), "src/lib.rs");
        assert_eq!(
            path_in("at x (/home/user/proj/node_modules/a/b.js:1:2)\n at y (/home/user/proj/src/c.mjs:3:4)", CWD).as_deref(),
            Some("src/c.mjs")
        );
        assert_eq!(path_in("at /home/user/proj/ nothing", CWD), None);
        assert_eq!(strip_line_col("/p/a.test.js:4:1"), "/p/a.test.js");
        assert_eq!(cap_head("ééé", 3), "é [truncated]");
        assert_eq!(cap_tail("ééé", 3), "[4 bytes omitted]\né");
    }
}
