//! Egress policy entries (`allow_out` / `deny_out`): a CIDR, a single
//! address or a domain name. Names are resolved by the backend when the
//! sandbox starts, so a policy pins the addresses a name had at that time.

use std::fmt;
use std::net::IpAddr;

/// Most entries accepted in one list.
pub const MAX_ENTRIES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressTarget {
    /// Network address (host bits cleared) and prefix length.
    Net(IpAddr, u8),
    /// A lowercase domain name without a trailing dot.
    Name(String),
}

impl fmt::Display for EgressTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Net(a, p) => write!(f, "{a}/{p}"),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// Why a policy entry is not a CIDR, an address or a domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressParseError {
    #[error("empty entry")]
    Empty,
    #[error("'{0}' is not a valid CIDR")]
    BadCidr(String),
    #[error("'{0}' has an invalid prefix length")]
    BadPrefix(String),
    #[error("'{0}' is neither a CIDR, an IP address nor a domain name")]
    Unrecognised(String),
}

impl EgressTarget {
    pub fn parse(s: &str) -> Result<Self, EgressParseError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(EgressParseError::Empty);
        }
        if let Some((addr, prefix)) = s.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| EgressParseError::BadCidr(s.into()))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| EgressParseError::BadPrefix(s.into()))?;
            return Ok(Self::Net(mask(addr, prefix), prefix));
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(Self::Net(addr, if addr.is_ipv4() { 32 } else { 128 }));
        }
        let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) || name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(EgressParseError::Unrecognised(s.into()));
        }
        Ok(Self::Name(name))
    }
}

/// Clears the host bits of `addr` beyond `prefix`.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs_addresses_and_names() {
        assert_eq!(EgressTarget::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(EgressTarget::parse("192.168.1.5").unwrap().to_string(), "192.168.1.5/32");
        assert_eq!(EgressTarget::parse("fd00::1/64").unwrap().to_string(), "fd00::/64");
        assert_eq!(EgressTarget::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(EgressTarget::parse("Example.COM.").unwrap(), EgressTarget::Name("example.com".into()));
        assert_eq!(EgressTarget::parse("localhost").unwrap(), EgressTarget::Name("localhost".into()));
        for bad in ["", "10.0.0.0/33", "1.2.3.4/x", "300.1.1.1", "a..b", "-a.com", "a_b.com", "x/8", "1.2.3", "fd00::/129"] {
            assert!(EgressTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
