//! The records of a POSIX pax extended header (`x` and `g` tar entries).
//!
//! Hand-written because the `tar` crate's `PaxExtensions` splits the header at newline bytes,
//! while POSIX frames each record by its decimal length prefix (`"%d %s=%s\n"`, the length
//! counting the whole record). Values may hold any byte: a file name with a newline, or a
//! binary `SCHILY.xattr.security.capability`. Split at newlines, those are refused as
//! malformed or, worse, misread. Pure parsing, no IO, used by `paddock-untar` (the agent's
//! archive upload and the runtime's layer store).

/// A pax header that does not follow the record format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pax record: {0}")]
pub struct PaxError(&'static str);

/// Iterates over the `(key, value)` records of pax header `data`, in order. After the first
/// error it yields nothing more.
pub fn pax_records(data: &[u8]) -> PaxRecords<'_> {
    PaxRecords { rest: data }
}

/// Iterator of [`pax_records`].
#[derive(Debug, Clone)]
pub struct PaxRecords<'a> {
    rest: &'a [u8],
}

impl<'a> PaxRecords<'a> {
    fn record(&mut self) -> Result<(&'a [u8], &'a [u8]), PaxError> {
        let data = self.rest;
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or(PaxError("no length"))?;
        let digits = &data[..space];
        if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(PaxError("bad length"));
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(PaxError("bad length"))?;
        if len <= space + 1 || len > data.len() {
            return Err(PaxError("length out of range"));
        }
        let record = &data[space + 1..len];
        let body = record
            .strip_suffix(b"\n")
            .ok_or(PaxError("record does not end with a newline"))?;
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or(PaxError("no '=' in record"))?;
        if eq == 0 {
            return Err(PaxError("empty key"));
        }
        self.rest = &data[len..];
        Ok((&body[..eq], &body[eq + 1..]))
    }
}

impl<'a> Iterator for PaxRecords<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), PaxError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Trailing NUL padding (some writers pad the header to the block size) ends the list.
        if self.rest.iter().all(|&b| b == 0) {
            return None;
        }
        let r = self.record();
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Record<'a> = (&'a [u8], &'a [u8]);

    fn all(data: &[u8]) -> Result<Vec<Record<'_>>, PaxError> {
        pax_records(data).collect()
    }

    #[test]
    fn length_prefixed_records_with_any_bytes() {
        // 12 = "12 path=a\nb\n": the newline inside the value belongs to it.
        let data = b"12 path=a\nb\n29 SCHILY.xattr.user.x=\x01\n\x00\xff=\n16 size=1234567\n";
        assert_eq!(
            all(data).unwrap(),
            vec![
                (&b"path"[..], &b"a\nb"[..]),
                (&b"SCHILY.xattr.user.x"[..], &b"\x01\n\x00\xff="[..]),
                (&b"size"[..], &b"1234567"[..]),
            ]
        );
        assert_eq!(all(b"").unwrap(), vec![]);
        assert_eq!(
            all(b"8 a=bcd\n\0\0\0").unwrap(),
            vec![(&b"a"[..], &b"bcd"[..])]
        );
    }

    #[test]
    fn what_the_tar_crate_writes_reads_back() {
        let mut b = tar::Builder::new(Vec::new());
        let value = b"\x01\x00\x00\x02\n\n\x20\x00\x00\x00";
        b.append_pax_extensions([("SCHILY.xattr.security.capability", &value[..])])
            .unwrap();
        let data = b.into_inner().unwrap();
        // The header's content starts after the 512-byte tar header.
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[124..135])
                .unwrap()
                .trim_matches(char::from(0)),
            8,
        )
        .unwrap();
        let got = all(&data[512..512 + size]).unwrap();
        assert_eq!(
            got,
            vec![(&b"SCHILY.xattr.security.capability"[..], &value[..])]
        );
    }

    #[test]
    fn malformed_records_are_errors() {
        for bad in [
            &b"path=a\n"[..],        // no length
            b"x path=a\n",           // length not a number
            b"99 path=a\n",          // longer than the data
            b"3 p\n",                // too short for a record
            b"10 patha.b\n",         // no '='
            b"9 path=ab",            // no newline at the end
            b"7 =abc\n",             // empty key
            b"10 path=ab\n10 path=", // the second one is cut
        ] {
            let r = all(bad);
            assert!(
                r.is_err(),
                "{:?} parsed as {r:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
