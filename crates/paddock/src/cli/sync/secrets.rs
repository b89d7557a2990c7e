//! The credential check of `paddock sync`: files that look like credentials are not sent
//! unless named with `--allow-secret` (or skipped with `--exclude`).
//!
//! A file is flagged by its name and place (cloud and package-manager credential files,
//! SSH private keys), by its content (a PEM private key header, a well-known token
//! pattern), or, for `.env` files, by a variable whose name says secret and whose value is
//! not a placeholder. The first [`MAX_SCAN`] bytes of a file are read; a file with a NUL
//! byte in its first 8 KiB is binary and only checked by name. The rules and their limits
//! are listed in `docs/sync.md`.

use std::io::Read;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

/// Bytes of a file read for the content checks.
pub(crate) const MAX_SCAN: u64 = 8 << 20;

/// Well-known token formats: (regex, what it is). Each is anchored on a non-word character
/// (or the start) before it, so `task-…` does not match `sk-…`.
static TOKENS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    let pats: &[(&str, &str)] = &[
        (
            r"-----BEGIN ((RSA|DSA|EC|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY( BLOCK)?-----",
            "a private key (PEM header)",
        ),
        (
            r"(^|[^A-Za-z0-9])((AKIA|ASIA)[0-9A-Z]{16})([^A-Za-z0-9]|$)",
            "an AWS access key id",
        ),
        (
            r"(^|[^A-Za-z0-9_])(gh[pousr]_[A-Za-z0-9]{36,})",
            "a GitHub token",
        ),
        (
            r"(^|[^A-Za-z0-9_])(github_pat_[A-Za-z0-9_]{22,})",
            "a GitHub token",
        ),
        (
            r"(^|[^A-Za-z0-9_])(glpat-[A-Za-z0-9_-]{20,})",
            "a GitLab token",
        ),
        (
            r"(^|[^A-Za-z0-9_])(xox[abposr]-[A-Za-z0-9-]{10,})",
            "a Slack token",
        ),
        (
            r"hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+",
            "a Slack webhook",
        ),
        (
            r"(^|[^A-Za-z0-9_-])(sk-ant-[A-Za-z0-9_-]{20,})",
            "an Anthropic API key",
        ),
        (
            r"(^|[^A-Za-z0-9_-])(sk-(proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,})",
            "an OpenAI API key",
        ),
        (
            r"(^|[^A-Za-z0-9_])((sk|rk)_live_[A-Za-z0-9]{20,})",
            "a Stripe live key",
        ),
        (
            r"(^|[^A-Za-z0-9_-])(AIza[0-9A-Za-z_-]{35})",
            "a Google API key",
        ),
        (r"(^|[^A-Za-z0-9_])(npm_[A-Za-z0-9]{36})", "an npm token"),
        (
            r"(^|[^A-Za-z0-9_])(hf_[A-Za-z0-9]{34,})",
            "a Hugging Face token",
        ),
        (
            r"(^|[^A-Za-z0-9_])(pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})",
            "a PyPI token",
        ),
    ];
    pats.iter()
        .map(|(p, why)| (Regex::new(p).expect("token pattern"), *why))
        .collect()
});

/// `.env` variable names that hold secrets.
static SECRET_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL|AUTH_?KEY)")
        .expect("secret name pattern")
});

/// Why `rel` (a `/`-separated path relative to the synced directory) looks like a
/// credential, or `None`. `content` is its first [`MAX_SCAN`] bytes.
pub(crate) fn check(rel: &str, content: &[u8]) -> Option<String> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let binary = content[..content.len().min(8192)].contains(&0);
    let text = String::from_utf8_lossy(content);
    if let Some(why) = by_name(rel, name, &text) {
        return Some(why);
    }
    if binary {
        return None;
    }
    if let Some(why) = token(&text) {
        return Some(format!("contains {why}"));
    }
    if is_env_file(name)
        && let Some(var) = env_secret(&text)
    {
        return Some(format!("sets {var} to a secret-like value"));
    }
    if name.ends_with(".json") && text.contains("\"private_key\"") {
        if text.contains("\"service_account\"") {
            return Some("a Google Cloud service account key".into());
        }
        return Some("a JSON file with a private_key".into());
    }
    None
}

/// Checks by file name (and, for files that may also hold harmless settings, a telltale
/// key in the content).
fn by_name(rel: &str, name: &str, text: &str) -> Option<String> {
    let in_dir =
        |dir: &str| rel == format!("{dir}/{name}") || rel.ends_with(&format!("/{dir}/{name}"));
    if in_dir(".aws")
        && (name == "credentials" || (name == "config" && text.contains("aws_secret_access_key")))
    {
        return Some("an AWS credentials file".into());
    }
    if matches!(
        name,
        "id_rsa" | "id_dsa" | "id_ecdsa" | "id_ed25519" | "id_ecdsa_sk" | "id_ed25519_sk"
    ) {
        return Some("an SSH private key".into());
    }
    if matches!(name, ".netrc" | "_netrc") {
        return Some("a .netrc file (machine passwords)".into());
    }
    if name == ".git-credentials" {
        return Some("a git credential store".into());
    }
    if name == ".pypirc" && text.contains("password") {
        return Some("a .pypirc with a password".into());
    }
    if name == ".npmrc"
        && (text.contains("_authToken") || text.contains("_auth=") || text.contains("_password"))
    {
        return Some("an .npmrc with an auth token".into());
    }
    if (name == "config.json" || name == "credentials.json")
        && in_dir(".docker")
        && (text.contains("\"auth\"") || text.contains("\"identitytoken\""))
    {
        return Some("a Docker config with registry credentials".into());
    }
    if name == "application_default_credentials.json"
        || (in_dir("gcloud") && (name == "credentials.db" || name == "access_tokens.db"))
    {
        return Some("Google Cloud credentials".into());
    }
    if name == "credentials.tfrc.json" {
        return Some("Terraform Cloud credentials".into());
    }
    if name == ".htpasswd" {
        return Some("an .htpasswd file".into());
    }
    None
}

/// The first well-known token in `text` (skipping AWS's documentation example keys).
fn token(text: &str) -> Option<&'static str> {
    for (re, why) in TOKENS.iter() {
        for caps in re.captures_iter(text) {
            let m = caps
                .get(2)
                .or_else(|| caps.get(0))
                .map_or("", |m| m.as_str());
            if m.contains("EXAMPLE") {
                continue;
            }
            return Some(why);
        }
    }
    None
}

/// `.env`, `.env.local`, `prod.env`…, but not `.env.example`, `.env.sample`, `.env.template`.
fn is_env_file(name: &str) -> bool {
    let is = name == ".env" || name.starts_with(".env.") || name.ends_with(".env");
    let example = ["example", "sample", "template", "dist", "defaults"]
        .iter()
        .any(|s| name.to_ascii_lowercase().contains(s));
    is && !example
}

/// The first variable of an env file whose name says secret and whose value is real.
fn env_secret(text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
        if SECRET_NAME.is_match(k) && !placeholder(v) {
            return Some(k.to_owned());
        }
    }
    None
}

/// Empty values, variable references and the usual stand-ins are not secrets.
fn placeholder(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    v.len() < 6
        || v.starts_with('$')
        || v.starts_with('<')
        || v.chars()
            .all(|c| c == 'x' || c == 'X' || c == '*' || c == '.')
        || [
            "changeme",
            "change_me",
            "change-me",
            "your",
            "example",
            "placeholder",
            "dummy",
            "replace",
            "todo",
            "fixme",
            "secret",
            "password",
            "redacted",
        ]
        .iter()
        .any(|p| l.starts_with(p))
}

/// Reads the first [`MAX_SCAN`] bytes of `path` and checks it.
pub(crate) fn check_file(path: &Path, rel: &str) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SCAN)
        .read_to_end(&mut buf)?;
    Ok(check(rel, &buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fake tokens are assembled at run time so this file itself holds none.
    fn fake(prefix: &str, body: &str) -> String {
        format!("{prefix}{body}")
    }

    #[test]
    fn true_positives() {
        let pem = fake("-----BEGIN RSA PRIVATE", " KEY-----\nMIIB...\n");
        let cases: Vec<(&str, String)> = vec![
            ("keys/deploy.pem", pem.clone()),
            (
                "notes.txt",
                fake("-----BEGIN OPENSSH PRIVATE", " KEY-----\n"),
            ),
            (
                "src/config.py",
                format!("KEY = '{}'\n", fake("AKIA", "Z7Q3K5M2P9R4T6W8")),
            ),
            (
                "a.sh",
                format!("export T={}\n", fake("ghp_", &"a1B2".repeat(9))),
            ),
            (
                "b.txt",
                fake("github_pat_", "11ABCDEFG0123456789_abcdefghij"),
            ),
            (
                "c.yml",
                format!("token: {}\n", fake("xoxb-", "1234567890-abcdef")),
            ),
            (
                "d.py",
                format!(
                    "openai.api_key = \"{}\"",
                    fake("sk-", "proj-abcdefghijklmnopqrstuvwx")
                ),
            ),
            ("e.py", fake("sk-", "ant-api03-abcdefghijklmnopqrstuvwxyz")),
            ("f.js", fake("AIza", "SyA1234567890abcdefghijklmnopqrstuv")),
            (".env", "DATABASE_PASSWORD=hunter2hunter2\n".into()),
            (
                "app/.env.local",
                "export STRIPE_API_KEY='abcd1234efgh'\n".into(),
            ),
            (".aws/credentials", "[default]\n".into()),
            ("home/.aws/config", "aws_secret_access_key = abc\n".into()),
            (".ssh/id_ed25519", "anything".into()),
            (".netrc", "machine x login y password z".into()),
            (".npmrc", "//registry.npmjs.org/:_authToken=abcdef\n".into()),
            (".pypirc", "[pypi]\npassword = pypi-abc\n".into()),
            (".git-credentials", "https://u:p@github.com\n".into()),
            (
                "sa-key.json",
                "{\"type\": \"service_account\", \"private_key\": \"x\"}".into(),
            ),
            ("gcloud/application_default_credentials.json", "{}".into()),
        ];
        for (rel, content) in cases {
            assert!(
                check(rel, content.as_bytes()).is_some(),
                "{rel} should be flagged"
            );
        }
        let why = check("k.pem", pem.as_bytes()).unwrap();
        assert!(why.contains("private key"), "{why}");
        let why = check(".env", b"GITHUB_TOKEN=abcdef123456\n").unwrap();
        assert!(why.contains("GITHUB_TOKEN"), "{why}");
    }

    #[test]
    fn false_positives() {
        let cases: Vec<(&str, String)> = vec![
            ("README.md", "Set AWS_ACCESS_KEY_ID and GITHUB_TOKEN in your environment.".into()),
            ("doc.md", format!("e.g. {}", fake("AKIA", "IOSFODNN7EXAMPLE"))),
            ("tasks.py", "task-abcdefghijklmnopqrstuvwxyz = 1\nmask-abcdefghijklmnopqrstuvwxyz".into()),
            ("pub.txt", "-----BEGIN PUBLIC KEY-----\nMII...\n".into()),
            (".ssh/id_ed25519.pub", "ssh-ed25519 AAAA".into()),
            (".env.example", "API_KEY=real-looking-value-123\n".into()),
            (".env", "API_KEY=\nSECRET_KEY=changeme\nTOKEN=${TOKEN}\nDEBUG=1\nPASSWORD=<your password>\n".into()),
            (".env", "PORT=8080\nHOST=example.com\n".into()),
            (".npmrc", "registry=https://registry.npmjs.org/\n".into()),
            (".pypirc", "[distutils]\nindex-servers = pypi\n".into()),
            ("aws/credentials.md", "how to set credentials".into()),
            ("package.json", "{\"name\": \"x\", \"private\": true}".into()),
            ("src/keys.rs", "// -----BEGIN PRIVATE KEY is what we look for\n".into()),
        ];
        for (rel, content) in cases {
            assert_eq!(check(rel, content.as_bytes()), None, "{rel} should pass");
        }
        // A binary file is checked by name only.
        let mut bin = vec![0u8; 100];
        bin.extend_from_slice(fake("AKIA", "Z7Q3K5M2P9R4T6W8").as_bytes());
        assert_eq!(check("blob.bin", &bin), None);
    }
}
