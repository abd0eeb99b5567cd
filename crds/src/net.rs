//! Address types shared by the API objects, and their OpenAPI schemas.
//!
//! Fields hold parsed [`IpAddr`]/[`IpNet`] values so that the controller never re-parses
//! strings; the schemas keep them strings on the wire and let the API server check the syntax
//! with the Kubernetes CEL IP library (`isIP`, `isCIDR`), so a typo is rejected at admission.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest textual IPv6 address with an embedded IPv4 tail, plus room for a prefix length.
const MAX_ADDRESS_LEN: u32 = 49;

/// Schema of one IP address (IPv4 or IPv6).
pub fn ip_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "description": "An IPv4 or IPv6 address.",
        "maxLength": MAX_ADDRESS_LEN,
        "x-kubernetes-validations": [
            {"rule": "isIP(self)", "message": "must be an IPv4 or IPv6 address"}
        ]
    })
}

/// Schema of a list of IP addresses.
pub fn ip_list_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "array", "maxItems": 64, "items": ip_schema(generator)})
}

/// Schema of at most one IPv4 and one IPv6 address (dual stack).
pub fn dual_stack_ips_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 2,
        "items": ip_schema(generator),
        "x-kubernetes-validations": [{
            "rule": "size(self) < 2 || !isIP(self[0]) || !isIP(self[1]) || ip(self[0]).family() != ip(self[1]).family()",
            "message": "at most one IPv4 and one IPv6 address"
        }]
    })
}

/// Schema of one CIDR whose host bits are zero.
pub fn cidr_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "description": "An IPv4 or IPv6 CIDR with zero host bits.",
        "maxLength": MAX_ADDRESS_LEN,
        "x-kubernetes-validations": [
            {"rule": "isCIDR(self)", "message": "must be a CIDR such as 10.0.0.0/16 or fd00::/64"},
            {"rule": "!isCIDR(self) || cidr(self) == cidr(self).masked()",
             "message": "must be a network address: the bits after the prefix length must be zero"}
        ]
    })
}

/// Schema of at most one IPv4 and one IPv6 CIDR (dual stack).
pub fn dual_stack_cidrs_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 2,
        "items": cidr_schema(generator),
        "x-kubernetes-validations": [{
            "rule": "size(self) < 2 || !isCIDR(self[0]) || !isCIDR(self[1]) || cidr(self[0]).ip().family() != cidr(self[1]).ip().family()",
            "message": "at most one IPv4 and one IPv6 CIDR"
        }]
    })
}

/// Schema of a MAC address.
pub fn mac_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "^([0-9a-f]{2}:){5}[0-9a-f]{2}$",
        "description": "A unicast MAC address in lower case, e.g. 0a:58:0a:00:01:05."
    })
}

/// Addresses given as one address (`10.0.0.5`), an inclusive range (`10.0.0.10..10.0.0.20`)
/// or a CIDR (`200.0.0.128/25`, every address in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpRange {
    Single(IpAddr),
    Range(IpAddr, IpAddr),
    Cidr(IpNet),
}

impl IpRange {
    /// The first address of the range.
    pub fn first(&self) -> IpAddr {
        match *self {
            Self::Single(a) | Self::Range(a, _) => a,
            Self::Cidr(net) => net.network(),
        }
    }

    /// The last address of the range (inclusive).
    pub fn last(&self) -> IpAddr {
        match *self {
            Self::Single(a) | Self::Range(_, a) => a,
            Self::Cidr(net) => net.broadcast(),
        }
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.first() <= ip && ip <= self.last() && self.first().is_ipv4() == ip.is_ipv4()
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.first().is_ipv4() == other.first().is_ipv4()
            && self.first() <= other.last()
            && other.first() <= self.last()
    }

    /// Whether the range lies entirely inside `net`.
    pub fn within(&self, net: &IpNet) -> bool {
        net.contains(&self.first()) && net.contains(&self.last())
    }
}

/// Why a string is not an [`IpRange`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an IP address, an address range \"first..last\" or a CIDR")]
pub struct ParseIpRangeError {
    input: String,
}

impl FromStr for IpRange {
    type Err = ParseIpRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIpRangeError {
            input: s.to_owned(),
        };
        if let Some((a, b)) = s.split_once("..") {
            let (a, b): (IpAddr, IpAddr) =
                (a.parse().map_err(|_| err())?, b.parse().map_err(|_| err())?);
            // A reversed or mixed-family range is a typo, not an empty range.
            if a.is_ipv4() != b.is_ipv4() || a > b {
                return Err(err());
            }
            Ok(Self::Range(a, b))
        } else if s.contains('/') {
            let net: IpNet = s.parse().map_err(|_| err())?;
            Ok(Self::Cidr(net))
        } else {
            Ok(Self::Single(s.parse().map_err(|_| err())?))
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(a) => write!(f, "{a}"),
            Self::Range(a, b) => write!(f, "{a}..{b}"),
            Self::Cidr(net) => write!(f, "{net}"),
        }
    }
}

impl Serialize for IpRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for IpRange {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IpRange".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 2 * MAX_ADDRESS_LEN + 2,
            "description": "An IP address, an inclusive range \"first..last\" or a CIDR.",
            "x-kubernetes-validations": [{
                "rule": "isIP(self) || isCIDR(self) || (self.split('..').size() == 2 && isIP(self.split('..')[0]) && isIP(self.split('..')[1]) && ip(self.split('..')[0]).family() == ip(self.split('..')[1]).family())",
                "message": "must be an IP address, a range \"first..last\" of one family, or a CIDR"
            }]
        })
    }
}

/// The first address after the network address (`10.0.1.1` in `10.0.1.0/24`, `fd00::1` in
/// `fd00::/64`); `None` when the block has no room for one.
pub fn first_host(net: &IpNet) -> Option<IpAddr> {
    let max_prefix = if net.addr().is_ipv4() { 30 } else { 126 };
    if net.prefix_len() > max_prefix {
        return None;
    }
    Some(match net.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) + 1).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) + 1).into()),
    })
}

/// Whether two CIDRs share an address.
pub fn cidrs_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_in_all_three_forms_and_print_as_written() {
        for s in [
            "10.0.0.5",
            "10.0.0.10..10.0.0.20",
            "200.0.0.128/25",
            "fd00::1..fd00::9",
        ] {
            let r: IpRange = s.parse().expect(s);
            assert_eq!(r.to_string(), s);
        }
        let cidr: IpRange = "200.0.0.128/25".parse().expect("cidr");
        assert_eq!(cidr.first().to_string(), "200.0.0.128");
        assert_eq!(cidr.last().to_string(), "200.0.0.255");
    }

    #[test]
    fn reversed_mixed_or_garbage_ranges_are_refused() {
        for s in [
            "10.0.0.20..10.0.0.10",
            "10.0.0.1..fd00::1",
            "10.0.0",
            "a..b",
            "10.0.0.0/33",
        ] {
            assert!(s.parse::<IpRange>().is_err(), "{s} should not parse");
        }
    }

    #[test]
    fn overlap_and_containment_respect_families() {
        let r = |s: &str| s.parse::<IpRange>().expect(s);
        assert!(r("10.0.0.1..10.0.0.9").overlaps(&r("10.0.0.9")));
        assert!(!r("10.0.0.1..10.0.0.9").overlaps(&r("10.0.0.10/31")));
        assert!(!r("0.0.0.0/0").contains("::1".parse().expect("ip")));
        assert!(r("200.0.0.100..200.0.0.199").within(&"200.0.0.0/24".parse().expect("net")));
        assert!(cidrs_overlap(
            &"10.0.0.0/16".parse().expect("a"),
            &"10.0.5.0/24".parse().expect("b")
        ));
        assert!(!cidrs_overlap(
            &"10.0.0.0/16".parse().expect("a"),
            &"10.1.0.0/16".parse().expect("b")
        ));
    }
}
