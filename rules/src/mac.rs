//! Ethernet (MAC) addresses as the policy writes them and alerts name them.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

/// Why text is not a MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an Ethernet address (expected six hex bytes like \"00:1d:9c:12:34:56\")")]
pub struct NotAMac;

impl Mac {
    /// Whether this is a group (multicast or broadcast) address, which no one host owns.
    pub fn is_group(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// Whether all zero (an ARP request's unknown target).
    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }
}

impl FromStr for Mac {
    type Err = NotAMac;

    /// Six hex bytes separated by `:` or `-` (`00:1d:9c:12:34:56`, `00-1D-9C-12-34-56`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.trim().split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or(NotAMac)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(NotAMac);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| NotAMac)?;
        }
        if parts.next().is_some() {
            return Err(NotAMac);
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_with_colons_or_dashes_and_print_lowercase() {
        let m: Mac = "00-1D-9C-12-34-5f".parse().unwrap();
        assert_eq!(m.to_string(), "00:1d:9c:12:34:5f");
        assert_eq!("00:1d:9c:12:34:5f".parse::<Mac>(), Ok(m));
        for bad in [
            "",
            "00:1d:9c:12:34",
            "00:1d:9c:12:34:56:78",
            "0:1d:9c:12:34:56",
            "zz:1d:9c:12:34:56",
            "+0:1d:9c:12:34:56",
        ] {
            assert_eq!(bad.parse::<Mac>(), Err(NotAMac), "{bad}");
        }
        assert!(Mac([1, 0, 0, 0, 0, 0]).is_group());
        assert!(!m.is_group());
    }
}
