//! Detection: the probe script lists the marker files of `cwd`, and the rules of the crate
//! docs pick the framework.

use std::collections::BTreeSet;

use paddock_runtime::{ExecRequest, Sandbox};

use crate::{Framework, HELPER_TIMEOUT, TestRequest, TestRunError};

/// What the probe script found in `cwd`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Probe {
    /// `/bin/bash` exists.
    pub(crate) bash: bool,
    /// `cwd` is writable by the user.
    pub(crate) writable: bool,
    pub(crate) files: BTreeSet<String>,
    pub(crate) dirs: BTreeSet<String>,
    /// Entries of `test/`, `tests/` and `__tests__/` as `dir/name`.
    pub(crate) nested: BTreeSet<String>,
    pub(crate) mentions_vitest: bool,
    pub(crate) mentions_jest: bool,
    pub(crate) node: Option<NodeReporter>,
    /// The project has its own virtualenv: `.venv/bin/python` is executable.
    pub(crate) venv: bool,
}

/// The best reporter the sandbox's node offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeReporter {
    /// `node:test/reporters` has `junit` (checked at run time, not by version).
    Junit,
    /// `--test-reporter=tap` exists but not junit.
    Tap,
    /// No `--test-reporter` flag; `node --test` writes TAP when stdout is not a terminal.
    Old,
}

/// Lists marker files of the current directory, one per line: `f name`, `d name`,
/// `t dir/name`, `mentions vitest|jest`, `node junit|tap|old`, `bash`, `writable`. `$1` is
/// the requested framework, if any: node's capabilities are only probed when node may run.
const PROBE_SCRIPT: &str = r#"
[ -x /bin/bash ] && echo bash
[ -w . ] && echo writable
[ -x .venv/bin/python ] && echo venv
for f in *; do
  if [ -d "$f" ]; then echo "d $f"; elif [ -e "$f" ]; then echo "f $f"; fi
done | head -n 5000
for d in test tests __tests__; do
  [ -d "$d" ] && ls -1 "$d" 2>/dev/null | head -n 500 | sed "s|^|t $d/|"
done
if [ -f package.json ]; then
  grep -q vitest package.json && echo "mentions vitest"
  grep -q jest package.json && echo "mentions jest"
fi
if command -v node >/dev/null 2>&1; then
  if [ "$1" = node ] || { [ -z "$1" ] && [ ! -e go.mod ] && [ ! -e Cargo.toml ]; }; then
    node -e 'let r; try { r = require("node:test/reporters"); } catch (e) { console.log("node old"); process.exit(0); } console.log(r.junit ? "node junit" : "node tap");' 2>/dev/null
  fi
fi
exit 0
"#;

pub(crate) async fn run_probe(sbx: &Sandbox, req: &TestRequest) -> Result<Probe, TestRunError> {
    let arg = req.framework.map_or("", Framework::as_str);
    let res = sbx
        .exec(ExecRequest {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                PROBE_SCRIPT.into(),
                "probe".into(),
                arg.into(),
            ],
            cwd: Some(req.cwd.clone()),
            user: req.user.clone(),
            timeout: Some(HELPER_TIMEOUT),
            max_output: Some(1 << 20),
            ..Default::default()
        })
        .await?;
    Ok(parse_probe(&String::from_utf8_lossy(&res.stdout)))
}

pub(crate) fn parse_probe(out: &str) -> Probe {
    let mut p = Probe::default();
    for line in out.lines() {
        match line.split_once(' ') {
            None if line == "bash" => p.bash = true,
            None if line == "writable" => p.writable = true,
            None if line == "venv" => p.venv = true,
            Some(("f", name)) => {
                p.files.insert(name.to_owned());
            }
            Some(("d", name)) => {
                p.dirs.insert(name.to_owned());
            }
            Some(("t", name)) => {
                p.nested.insert(name.to_owned());
            }
            Some(("mentions", "vitest")) => p.mentions_vitest = true,
            Some(("mentions", "jest")) => p.mentions_jest = true,
            Some(("node", "junit")) => p.node = Some(NodeReporter::Junit),
            Some(("node", "tap")) => p.node = Some(NodeReporter::Tap),
            Some(("node", "old")) => p.node = Some(NodeReporter::Old),
            _ => {}
        }
    }
    p
}

/// Whether `name` is a file node's test runner picks up by default.
fn is_node_test_file(name: &str) -> bool {
    let Some(stem) = [".js", ".mjs", ".cjs"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
    else {
        return false;
    };
    stem == "test"
        || stem.ends_with(".test")
        || stem.ends_with("-test")
        || stem.ends_with("_test")
        || stem.starts_with("test-")
}

fn has_node_tests(p: &Probe) -> bool {
    p.files.iter().any(|f| is_node_test_file(f))
        || p.nested.iter().any(|f| {
            f.starts_with("test/") && [".js", ".mjs", ".cjs"].iter().any(|e| f.ends_with(e))
        })
}

fn has_pytest_markers(p: &Probe) -> bool {
    ["pytest.ini", "pyproject.toml", "setup.cfg", "conftest.py"]
        .iter()
        .any(|f| p.files.contains(*f))
        || p.dirs.contains("tests")
        || p.files
            .iter()
            .any(|f| f.ends_with(".py") && (f.starts_with("test_") || f.ends_with("_test.py")))
}

/// The detection rules of the module docs, in order.
pub(crate) fn detect(p: &Probe) -> Option<Framework> {
    if p.files.contains("go.mod") {
        return Some(Framework::GoTest);
    }
    if p.files.contains("Cargo.toml") {
        return Some(Framework::CargoTest);
    }
    if p.files.contains("package.json") {
        if p.mentions_vitest {
            return Some(Framework::Vitest);
        }
        if p.mentions_jest {
            return Some(Framework::Jest);
        }
        if has_node_tests(p) {
            return Some(Framework::NodeTest);
        }
    }
    if has_pytest_markers(p) {
        return Some(Framework::Pytest);
    }
    if has_node_tests(p) {
        return Some(Framework::NodeTest);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn detection_order() {
        use Framework::*;
        let d = |p: Probe| detect(&p);
        assert_eq!(
            d(probe(&["go.mod", "Cargo.toml", "package.json"], &[], &[])),
            Some(GoTest)
        );
        assert_eq!(
            d(probe(&["Cargo.toml", "pyproject.toml"], &[], &[])),
            Some(CargoTest)
        );
        let mut p = probe(&["package.json", "pytest.ini"], &[], &[]);
        p.mentions_jest = true;
        assert_eq!(d(p.clone()), Some(Jest));
        p.mentions_vitest = true;
        assert_eq!(d(p), Some(Vitest));
        assert_eq!(
            d(probe(&["package.json", "a.test.mjs"], &[], &[])),
            Some(NodeTest)
        );
        assert_eq!(
            d(probe(&["package.json"], &["test"], &["test/x.js"])),
            Some(NodeTest)
        );
        // A package.json without tests falls through to pytest markers.
        assert_eq!(
            d(probe(&["package.json", "setup.cfg"], &[], &[])),
            Some(Pytest)
        );
        assert_eq!(d(probe(&["test_x.py"], &[], &[])), Some(Pytest));
        assert_eq!(d(probe(&["x_test.py"], &[], &[])), Some(Pytest));
        assert_eq!(d(probe(&[], &["tests"], &[])), Some(Pytest));
        assert_eq!(d(probe(&["conftest.py"], &[], &[])), Some(Pytest));
        assert_eq!(d(probe(&["test.js"], &[], &[])), Some(NodeTest));
        assert_eq!(
            d(probe(
                &["README.md", "main.py", "testing.js"],
                &["src"],
                &[]
            )),
            None
        );
    }

    #[test]
    fn probe_output() {
        let p = parse_probe(
            "bash\nwritable\nf go.mod\nf my file.txt\nd src\nt tests/test_a.py\nmentions jest\nnode junit\n",
        );
        assert!(p.bash && p.writable && p.mentions_jest && !p.mentions_vitest);
        assert!(p.files.contains("my file.txt") && p.dirs.contains("src"));
        assert!(p.nested.contains("tests/test_a.py"));
        assert_eq!(p.node, Some(NodeReporter::Junit));
    }
}
