//! Resource limits of one sandbox, with validation against sane bounds.

/// Resource limits applied to a sandbox's cgroup, tmpfs and writable layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes (no swap).
    pub memory_bytes: u64,
    /// CPU quota in millicores (1000 = one full core).
    pub cpu_millis: u32,
    /// Maximum number of tasks (processes and threads).
    pub pids: u32,
    /// Size of the writable root layer in bytes.
    pub disk_bytes: u64,
    /// Size of the `/tmp` tmpfs in bytes (charged to the memory limit).
    pub tmp_bytes: u64,
}

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 512 * MIB,
            cpu_millis: 1000,
            pids: 512,
            disk_bytes: 2 * GIB,
            tmp_bytes: 256 * MIB,
        }
    }
}

/// A limit outside the range Paddock accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    /// The value is below the minimum a sandbox needs to start.
    #[error("{name} {value} is below the minimum of {min}")]
    TooSmall {
        name: &'static str,
        value: u64,
        min: u64,
    },
    /// The value is above the maximum Paddock allows.
    #[error("{name} {value} is above the maximum of {max}")]
    TooLarge {
        name: &'static str,
        value: u64,
        max: u64,
    },
    /// A size string could not be parsed.
    #[error("invalid size {0:?}: expected a number with an optional K, M, G or T suffix")]
    BadSize(String),
}

impl Limits {
    /// Checks every limit against its bounds. `host_memory` caps the memory limit.
    pub fn validate(&self, host_memory: u64) -> Result<(), LimitsError> {
        check(
            "memory",
            self.memory_bytes,
            16 * MIB,
            host_memory.max(16 * MIB),
        )?;
        check("cpu millicores", u64::from(self.cpu_millis), 10, 256_000)?;
        check("pids", u64::from(self.pids), 8, 1 << 22)?;
        check("disk", self.disk_bytes, 16 * MIB, 16 * 1024 * GIB)?;
        check("tmp size", self.tmp_bytes, MIB, self.memory_bytes.max(MIB))?;
        Ok(())
    }
}

fn check(name: &'static str, value: u64, min: u64, max: u64) -> Result<(), LimitsError> {
    if value < min {
        return Err(LimitsError::TooSmall { name, value, min });
    }
    if value > max {
        return Err(LimitsError::TooLarge { name, value, max });
    }
    Ok(())
}

/// Parses `512M`, `2G`, `1024`, `1.5G` (binary units) into bytes.
pub fn parse_size(s: &str) -> Result<u64, LimitsError> {
    let t = s.trim();
    let bad = || LimitsError::BadSize(s.to_owned());
    let (num, mult) = match t.char_indices().last().ok_or_else(bad)? {
        (i, c) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1024,
                'M' => MIB,
                'G' => GIB,
                'T' => 1024 * GIB,
                _ => return Err(bad()),
            };
            (t[..i].trim_end_matches(['i', 'I']).trim(), m)
        }
        _ => (t, 1),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    Ok((v * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 * MIB);
        assert_eq!(parse_size("1.5G").unwrap(), 3 * GIB / 2);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn bounds() {
        assert!(Limits::default().validate(24 * GIB).is_ok());
        let zero = Limits {
            memory_bytes: 0,
            ..Limits::default()
        };
        assert!(matches!(
            zero.validate(24 * GIB),
            Err(LimitsError::TooSmall { .. })
        ));
        let huge = Limits {
            memory_bytes: u64::MAX,
            ..Limits::default()
        };
        assert!(matches!(
            huge.validate(24 * GIB),
            Err(LimitsError::TooLarge { .. })
        ));
    }
}
