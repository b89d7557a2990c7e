//! Isolation backends: what stands between a sandbox's code and the host kernel.

use serde::{Deserialize, Serialize};

/// How a sandbox is isolated (`docs/isolation.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Namespaces, cgroups, capabilities and a seccomp denylist on the host kernel.
    #[default]
    Native,
    /// gVisor (`runsc`, ptrace platform): the same agent as PID 1 on gVisor's user-space
    /// kernel, which answers the sandbox's system calls itself.
    Gvisor,
}

impl Isolation {
    /// Every backend, in the order they are listed to users.
    pub const ALL: [Isolation; 2] = [Isolation::Native, Isolation::Gvisor];

    /// The name used on the wire, in flags and in template files.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Native => "native",
            Isolation::Gvisor => "gvisor",
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An isolation name that is not one of [`Isolation::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownIsolation(pub String);

impl std::fmt::Display for UnknownIsolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown isolation {:?}: choose native or gvisor",
            self.0.chars().take(64).collect::<String>()
        )
    }
}

impl std::error::Error for UnknownIsolation {}

impl std::str::FromStr for Isolation {
    type Err = UnknownIsolation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Isolation::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| UnknownIsolation(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for i in Isolation::ALL {
            assert_eq!(i.as_str().parse::<Isolation>(), Ok(i));
            assert_eq!(serde_json::to_string(&i).unwrap(), format!("\"{i}\""));
        }
        let e = "kvm".parse::<Isolation>().unwrap_err().to_string();
        assert!(e.contains("native") && e.contains("gvisor"), "{e}");
    }
}
