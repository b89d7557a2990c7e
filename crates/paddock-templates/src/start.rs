//! The build file's start and ready instructions: `START`, `CMD`, `ENTRYPOINT` (a command in
//! shell or exec form) and `READY` (a command or a port, with a timeout).

use std::time::Duration;

use paddock_runtime::template::{
    READY_TIMEOUT_DEFAULT_MS, READY_TIMEOUT_MAX_MS, ReadyCheck, TemplateLimits,
};

/// A command of `START`, `CMD` or `ENTRYPOINT`: exec form (a JSON array of strings) or shell
/// form (`/bin/sh -c` and the rest of the line). `allow_empty`: `CMD []` and `ENTRYPOINT []`
/// clear the value, as in Docker; `START` needs a command.
pub(super) fn parse_command(
    word: &str,
    rest: &str,
    allow_empty: bool,
) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    if rest.starts_with('[') {
        let argv: Vec<String> = serde_json::from_str(rest).map_err(|e| {
            format!("{word}: the exec form is a JSON array of strings ({e}); write the shell form without brackets")
        })?;
        if argv.is_empty() && !allow_empty {
            return Err(format!("{word} needs a command"));
        }
        if argv.first().is_some_and(String::is_empty) {
            return Err(format!("{word}: the program name is empty"));
        }
        return Ok(argv);
    }
    if rest.is_empty() {
        return Err(format!("{word} needs a command"));
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_owned()])
}

/// `READY [--timeout DUR] (--port N | COMMAND)`: flags first, in any order, then either the
/// port flag or a shell command (the rest of the line).
pub(super) fn parse_ready(rest: &str) -> Result<ReadyCheck, String> {
    let mut timeout_ms = READY_TIMEOUT_DEFAULT_MS;
    let mut port = None;
    let mut rest = rest.trim();
    while let Some(flag_and_more) = rest.strip_prefix("--") {
        let (name, value, after) = flag_value(flag_and_more);
        if value.is_empty() {
            return Err(format!("READY: --{name} needs a value"));
        }
        match name {
            "timeout" => timeout_ms = parse_duration_ms(value)?,
            "port" => {
                port = Some(
                    value
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| {
                            format!("READY: --port {value:?} is not a TCP port (1 to 65535)")
                        })?,
                );
            }
            _ => {
                return Err(format!(
                    "READY: unknown flag --{name} (use --timeout DUR and --port N)"
                ));
            }
        }
        rest = after;
    }
    let cmd = (!rest.is_empty()).then(|| rest.to_owned());
    let check = match (cmd, port) {
        (Some(_), Some(_)) => {
            return Err("READY takes either --port N or a command, not both".into());
        }
        (None, None) => return Err("READY needs --port N or a command".into()),
        (cmd, port) => ReadyCheck {
            cmd,
            port,
            timeout_ms,
        },
    };
    check.validate().map_err(|e| format!("READY: {e}"))?;
    Ok(check)
}

/// Most memory a template may ask for its sandboxes (a create may still ask for more, up to
/// the host's memory).
pub(super) const LIMITS_MAX_MEMORY: u64 = 64 << 30;
/// Most disk a template may ask for.
pub(super) const LIMITS_MAX_DISK: u64 = 1 << 40;
/// Most tasks a template may ask for.
pub(super) const LIMITS_MAX_PIDS: u32 = 65_536;

/// `LIMITS [--memory SIZE] [--pids N] [--disk SIZE]` (at least one; `--flag=value` or
/// `--flag value`): the template's default limits. Sizes as `512M`, `2G` (binary units);
/// each is checked against the same minimums as a create's and the maximums above.
pub(super) fn parse_limits(rest: &str) -> Result<TemplateLimits, String> {
    let mut out = TemplateLimits::default();
    let mut rest = rest.trim();
    if rest.is_empty() {
        return Err("LIMITS needs at least one of --memory SIZE, --pids N, --disk SIZE".into());
    }
    while !rest.is_empty() {
        let Some(flag_and_more) = rest.strip_prefix("--") else {
            return Err(format!(
                "LIMITS: unexpected {:?} (use --memory SIZE, --pids N, --disk SIZE)",
                split_word(rest).0
            ));
        };
        let (name, value, after) = flag_value(flag_and_more);
        if value.is_empty() {
            return Err(format!("LIMITS: --{name} needs a value"));
        }
        let size = |min: u64, max: u64| -> Result<u64, String> {
            let v =
                paddock_core::parse_size(value).map_err(|e| format!("LIMITS: --{name}: {e}"))?;
            if v < min || v > max {
                return Err(format!(
                    "LIMITS: --{name} {value} is outside {} MiB to {} GiB",
                    min >> 20,
                    max >> 30
                ));
            }
            Ok(v)
        };
        match name {
            "memory" => out.memory_bytes = Some(size(16 << 20, LIMITS_MAX_MEMORY)?),
            "disk" => out.disk_bytes = Some(size(16 << 20, LIMITS_MAX_DISK)?),
            "pids" => {
                out.pids = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|p| (8..=LIMITS_MAX_PIDS).contains(p))
                        .ok_or_else(|| {
                            format!("LIMITS: --pids {value:?} is not a number from 8 to {LIMITS_MAX_PIDS}")
                        })?,
                );
            }
            _ => {
                return Err(format!(
                    "LIMITS: unknown flag --{name} (use --memory SIZE, --pids N, --disk SIZE)"
                ));
            }
        }
        rest = after;
    }
    Ok(out)
}

/// A flag's name, its value and what follows, from `--flag=value rest` or `--flag value
/// rest` (the leading `--` already taken off).
fn flag_value(flag_and_more: &str) -> (&str, &str, &str) {
    let (flag, after) = split_word(flag_and_more);
    match flag.split_once('=') {
        Some((name, value)) => (name, value, after),
        None => {
            let (value, after) = split_word(after);
            (flag, value, after)
        }
    }
}

fn split_word(s: &str) -> (&str, &str) {
    s.split_once(char::is_whitespace)
        .map_or((s, ""), |(w, r)| (w, r.trim_start()))
}

/// A duration like `500ms`, `30s`, `2m` or `1m30s` (a bare number is seconds), more than 0
/// and at most [`READY_TIMEOUT_MAX_MS`].
pub(super) fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "READY: --timeout {s:?} is not a duration (such as 500ms, 30s, 2m; more than 0, at most {} min)",
            READY_TIMEOUT_MAX_MS / 60_000
        )
    };
    let mut total: u128 = 0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mut unit = String::from(c);
        while let Some(&c2) = chars.peek() {
            if c2.is_ascii_digit() {
                break;
            }
            unit.push(c2);
            chars.next();
        }
        let n: u128 = num.parse().map_err(|_| bad())?;
        num.clear();
        let ms = match unit.as_str() {
            "ms" => n,
            "s" => n * 1000,
            "m" | "min" => n * 60_000,
            "h" => n * 3_600_000,
            _ => return Err(bad()),
        };
        total = total.saturating_add(ms);
        any = true;
    }
    if !num.is_empty() {
        if any {
            return Err(bad());
        }
        total = num.parse::<u128>().map_err(|_| bad())? * 1000;
        any = true;
    }
    if !any || total == 0 || total > u128::from(READY_TIMEOUT_MAX_MS) {
        return Err(bad());
    }
    Ok(u64::try_from(total).unwrap_or(READY_TIMEOUT_MAX_MS))
}

/// A timeout as a short text (`30s`, `1500ms`).
pub fn show_ms(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    if ms.is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_take_their_value_after_a_space_or_an_equals_sign() {
        assert_eq!(flag_value("port 8000 rest"), ("port", "8000", "rest"));
        assert_eq!(flag_value("port=8000 rest"), ("port", "8000", "rest"));
        assert_eq!(flag_value("port"), ("port", "", ""));
        assert_eq!(flag_value("port="), ("port", "", ""));
        // Both forms mean the same to READY and LIMITS.
        assert_eq!(
            parse_ready("--timeout=5s --port=8000").unwrap(),
            parse_ready("--timeout 5s --port 8000").unwrap()
        );
        assert_eq!(
            parse_limits("--memory=2G --pids=64").unwrap(),
            parse_limits("--memory 2G --pids 64").unwrap()
        );
    }

    #[test]
    fn limits_parse_and_refuse_bad_values() {
        let l = parse_limits("--memory 2G --pids=1024 --disk 4G").unwrap();
        assert_eq!(l.memory_bytes, Some(2 << 30));
        assert_eq!(l.pids, Some(1024));
        assert_eq!(l.disk_bytes, Some(4 << 30));
        let l = parse_limits("--memory=512M").unwrap();
        assert_eq!(
            (l.memory_bytes, l.pids, l.disk_bytes),
            (Some(512 << 20), None, None)
        );
        for (bad, says) in [
            ("", "at least one"),
            ("--memory", "needs a value"),
            ("--memory lots", "invalid size"),
            ("--memory 1M", "outside"),
            ("--memory 100G", "outside"),
            ("--pids 2", "from 8"),
            ("--cpus 2", "unknown flag --cpus"),
            ("2G", "unexpected"),
        ] {
            let e = parse_limits(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn commands_in_both_forms() {
        assert_eq!(
            parse_command("START", "python3 -m http.server 8000", false).unwrap(),
            vec!["/bin/sh", "-c", "python3 -m http.server 8000"]
        );
        assert_eq!(
            parse_command("CMD", r#"["python3", "-m", "http.server"]"#, true).unwrap(),
            vec!["python3", "-m", "http.server"]
        );
        assert!(parse_command("CMD", "[]", true).unwrap().is_empty());
        assert!(parse_command("START", "[]", false).is_err());
        assert!(parse_command("START", "", false).is_err());
        assert!(parse_command("START", r#"["a", 1]"#, false).is_err());
    }

    #[test]
    fn ready_checks() {
        let r = parse_ready("--port 8000").unwrap();
        assert_eq!(
            (r.port, r.cmd.as_deref(), r.timeout_ms),
            (Some(8000), None, 30_000)
        );
        let r = parse_ready("--timeout 60s --port 49999").unwrap();
        assert_eq!((r.port, r.timeout_ms), (Some(49999), 60_000));
        let r = parse_ready("--timeout=1m30s test -f /tmp/ready").unwrap();
        assert_eq!(
            (r.cmd.as_deref(), r.timeout_ms),
            (Some("test -f /tmp/ready"), 90_000)
        );
        assert_eq!(parse_ready("--timeout 500ms true").unwrap().timeout_ms, 500);
        for (bad, needle) in [
            ("--port 99999", "not a TCP port"),
            ("--port 0", "not a TCP port"),
            ("--timeout -1 true", "not a duration"),
            ("--timeout 0s true", "not a duration"),
            ("--timeout 11m true", "not a duration"),
            ("--timeout 5x true", "not a duration"),
            ("--port 80 curl x", "not both"),
            ("", "needs --port"),
            ("--timeout 5s", "needs --port"),
            ("--bogus 1 true", "unknown flag"),
            ("--port", "needs a value"),
        ] {
            let e = parse_ready(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
