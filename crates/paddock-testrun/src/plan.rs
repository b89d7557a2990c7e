//! Commands: the shell script that runs a framework's tests, its environment, and where it
//! writes a machine-readable report (the table of the crate docs).

use std::collections::BTreeMap;

use crate::Framework;
use crate::detect::{NodeReporter, Probe};

/// A machine-readable report file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReportKind {
    Junit,
    JestJson,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) script: String,
    pub(crate) env: BTreeMap<String, String>,
    /// Where the command writes its report, and in which format.
    pub(crate) report: Option<(String, ReportKind)>,
}

pub(crate) fn plan(
    framework: Option<Framework>,
    cmd: Option<&str>,
    probe: &Probe,
    tmp: &str,
) -> Plan {
    let mut env = BTreeMap::new();
    if let Some(cmd) = cmd {
        let path = format!("{tmp}.xml");
        env.insert("PADDOCK_JUNIT_XML".to_owned(), path.clone());
        return Plan {
            script: cmd.to_owned(),
            env,
            report: Some((path, ReportKind::Junit)),
        };
    }
    let xml = format!("{tmp}.xml");
    let (script, report) = match framework {
        Some(Framework::Pytest) => (
            format!(
                "{} -m pytest --junitxml={xml} -o junit_family=xunit1 -o junit_logging=out-err -q",
                if probe.venv {
                    ".venv/bin/python"
                } else {
                    "python3"
                }
            ),
            Some((xml, ReportKind::Junit)),
        ),
        Some(Framework::Jest) => {
            let json = format!("{tmp}.json");
            (
                format!("npx --no-install jest --ci --json --outputFile={json}"),
                Some((json, ReportKind::JestJson)),
            )
        }
        Some(Framework::Vitest) => (
            format!(
                "npx --no-install vitest run --reporter=default --reporter=junit --outputFile.junit={xml}"
            ),
            Some((xml, ReportKind::Junit)),
        ),
        Some(Framework::GoTest) => ("go test -json ./...".to_owned(), None),
        Some(Framework::CargoTest) => {
            // A read-only project directory cannot hold `target/`; build in /tmp instead.
            if !probe.writable {
                env.insert(
                    "CARGO_TARGET_DIR".to_owned(),
                    "/tmp/paddock-cargo-target".to_owned(),
                );
            }
            ("cargo test --no-fail-fast 2>&1".to_owned(), None)
        }
        Some(Framework::NodeTest) => match probe.node {
            Some(NodeReporter::Junit) => (
                format!(
                    "node --test --test-reporter=spec --test-reporter-destination=stdout --test-reporter=junit --test-reporter-destination={xml}"
                ),
                Some((xml, ReportKind::Junit)),
            ),
            Some(NodeReporter::Tap) => ("node --test --test-reporter=tap".to_owned(), None),
            Some(NodeReporter::Old) | None => ("node --test".to_owned(), None),
        },
        None => ("true".to_owned(), None),
    };
    Plan {
        script,
        env,
        report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::parse_probe;
    use crate::fixtures::*;

    #[test]
    fn plans() {
        let mut p = probe(&[], &[], &[]);
        p.node = Some(NodeReporter::Tap);
        let pl = plan(Some(Framework::NodeTest), None, &p, "/tmp/t");
        assert_eq!(pl.script, "node --test --test-reporter=tap");
        assert_eq!(pl.report, None);
        p.node = Some(NodeReporter::Junit);
        let pl = plan(Some(Framework::NodeTest), None, &p, "/tmp/t");
        assert_eq!(pl.report, Some(("/tmp/t.xml".into(), ReportKind::Junit)));
        let pl = plan(Some(Framework::CargoTest), None, &p, "/tmp/t");
        assert_eq!(
            pl.env.get("CARGO_TARGET_DIR").map(String::as_str),
            Some("/tmp/paddock-cargo-target")
        );
        let pl = plan(None, Some("make test"), &p, "/tmp/t");
        assert_eq!(pl.script, "make test");
        assert_eq!(
            pl.env.get("PADDOCK_JUNIT_XML").map(String::as_str),
            Some("/tmp/t.xml")
        );
        let pl = plan(Some(Framework::Jest), None, &p, "/tmp/t");
        assert_eq!(
            pl.report,
            Some(("/tmp/t.json".into(), ReportKind::JestJson))
        );
        // pytest runs under the project's own virtualenv when it has one.
        let pl = plan(Some(Framework::Pytest), None, &p, "/tmp/t");
        assert!(pl.script.starts_with("python3 -m pytest "), "{}", pl.script);
        assert!(parse_probe("venv\nf test_a.py\n").venv);
        p.venv = true;
        let pl = plan(Some(Framework::Pytest), None, &p, "/tmp/t");
        assert!(
            pl.script.starts_with(".venv/bin/python -m pytest "),
            "{}",
            pl.script
        );
    }
}
