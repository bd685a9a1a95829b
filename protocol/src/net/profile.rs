//! Network profiles: the bandwidth and round-trip time a link emulates.

use std::fmt;
use std::time::Duration;

use super::NetError;

/// Bandwidth and latency of an emulated link. Each direction of a link is modelled
/// separately with this bandwidth and a one-way latency of `rtt / 2`.
#[derive(Clone, Debug, PartialEq)]
pub struct NetProfile {
    /// Short name, used in reports (`"lan"`, `"wan"`, `"10mbps,20ms"`, ...).
    pub name: String,
    /// Bits per second; `None` means unlimited.
    pub bandwidth_bps: Option<f64>,
    /// Round-trip time; each direction adds half of it.
    pub rtt: Duration,
}

impl NetProfile {
    /// No emulation: unlimited bandwidth, zero latency.
    pub fn none() -> Self {
        Self {
            name: "none".into(),
            bandwidth_bps: None,
            rtt: Duration::ZERO,
        }
    }

    /// 1 Gbit/s, 0.5 ms RTT.
    pub fn lan() -> Self {
        Self {
            name: "lan".into(),
            bandwidth_bps: Some(1e9),
            rtt: Duration::from_micros(500),
        }
    }

    /// 400 Mbit/s, 4 ms RTT.
    pub fn wan() -> Self {
        Self {
            name: "wan".into(),
            bandwidth_bps: Some(400e6),
            rtt: Duration::from_millis(4),
        }
    }

    /// SIGMA's LAN: 9.4 Gbit/s, 0.05 ms RTT.
    pub fn sigma_lan() -> Self {
        Self {
            name: "sigma-lan".into(),
            bandwidth_bps: Some(9.4e9),
            rtt: Duration::from_micros(50),
        }
    }

    /// True when the profile adds neither latency nor a bandwidth limit.
    pub fn is_none(&self) -> bool {
        self.bandwidth_bps.is_none() && self.rtt.is_zero()
    }

    /// Parses `"lan"`, `"wan"`, `"sigma-lan"`, `"none"` or `"BW,RTT"`, where BW is a
    /// number of bits per second with an optional unit (`"1e9"`, `"400mbps"`, `"1gbps"`,
    /// `"9.4gbit"`, `"500kbps"`; `"inf"` for unlimited) and RTT a number with a unit
    /// (`"0.5ms"`, `"4ms"`, `"50us"`, `"0.004s"`). Case-insensitive.
    pub fn parse(s: &str) -> Result<Self, NetError> {
        let bad = |reason: &str| NetError::BadProfile {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "none" => return Ok(Self::none()),
            "lan" => return Ok(Self::lan()),
            "wan" => return Ok(Self::wan()),
            "sigma-lan" | "sigma_lan" | "sigmalan" => return Ok(Self::sigma_lan()),
            _ => {}
        }
        let Some((bw_s, rtt_s)) = t.split_once(',') else {
            return Err(bad(
                "expected lan, wan, sigma-lan, none or BANDWIDTH,RTT (e.g. 400mbps,4ms)",
            ));
        };
        let (bw_s, rtt_s) = (bw_s.trim(), rtt_s.trim());
        let bandwidth_bps = parse_bandwidth(bw_s).map_err(|r| bad(&r))?;
        let rtt = parse_duration(rtt_s).map_err(|r| bad(&r))?;
        Ok(Self {
            name: format!("{bw_s},{rtt_s}"),
            bandwidth_bps,
            rtt,
        })
    }

    /// Modelled one-way time of a message of `bytes` bytes: `rtt/2 + 8·bytes/bandwidth`.
    pub fn one_way_time(&self, bytes: usize) -> Duration {
        (self.rtt / 2).saturating_add(self.serialization_time(bytes))
    }

    /// Time the link is busy sending `bytes` bytes: `8·bytes/bandwidth` (zero if unlimited).
    pub fn serialization_time(&self, bytes: usize) -> Duration {
        match self.bandwidth_bps {
            // Saturates rather than panics on an absurd size or bandwidth.
            Some(bw) => {
                Duration::try_from_secs_f64(8.0 * bytes as f64 / bw).unwrap_or(Duration::MAX)
            }
            None => Duration::ZERO,
        }
    }
}

impl Default for NetProfile {
    fn default() -> Self {
        Self::none()
    }
}

impl fmt::Display for NetProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bw = match self.bandwidth_bps {
            Some(b) if b >= 1e9 => format!("{} Gbit/s", b / 1e9),
            Some(b) if b >= 1e6 => format!("{} Mbit/s", b / 1e6),
            Some(b) => format!("{b} bit/s"),
            None => "unlimited".to_string(),
        };
        write!(
            f,
            "{} ({bw}, RTT {} ms)",
            self.name,
            self.rtt.as_secs_f64() * 1e3
        )
    }
}

/// Splits `"12.5mbps"` into `(12.5, "mbps")`.
fn split_number(s: &str) -> Result<(f64, &str), String> {
    // Units never start with 'e', so a number is the longest prefix of these characters.
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-')))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    if num.is_empty() {
        return Err(format!("missing number in {s:?}"));
    }
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad number {num:?} in {s:?}"))?;
    if !v.is_finite() {
        return Err(format!("number in {s:?} is not finite"));
    }
    Ok((v, unit.trim()))
}

fn parse_bandwidth(s: &str) -> Result<Option<f64>, String> {
    if matches!(s, "inf" | "unlimited" | "none") {
        return Ok(None);
    }
    let (v, unit) = split_number(s)?;
    let mult = match unit {
        "" | "bps" | "bit" | "b/s" => 1.0,
        "k" | "kbps" | "kbit" | "kb/s" => 1e3,
        "m" | "mbps" | "mbit" | "mb/s" => 1e6,
        "g" | "gbps" | "gbit" | "gb/s" => 1e9,
        _ => {
            return Err(format!(
                "unknown bandwidth unit {unit:?} (use bps, kbps, mbps, gbps)"
            ))
        }
    };
    let bw = v * mult;
    // At least 1 bit/s: below, the modelled delivery time of a frame overflows a
    // Duration (found by fuzzing: "2e-204bps" made every send panic).
    if !(bw >= 1.0 && bw.is_finite()) {
        return Err(format!("bandwidth must be at least 1 bit/s, got {s:?}"));
    }
    Ok(Some(bw))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (v, unit) = split_number(s)?;
    let secs = match unit {
        "s" | "sec" => v,
        "ms" => v * 1e-3,
        "us" | "µs" => v * 1e-6,
        "ns" => v * 1e-9,
        "" => return Err(format!("RTT {s:?} needs a unit (s, ms, us)")),
        _ => return Err(format!("unknown time unit {unit:?} (use s, ms, us)")),
    };
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("RTT must be between 0 and 1 hour, got {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_profiles() {
        assert_eq!(NetProfile::parse("lan").unwrap(), NetProfile::lan());
        assert_eq!(NetProfile::parse("WAN").unwrap(), NetProfile::wan());
        assert_eq!(
            NetProfile::parse("sigma-lan").unwrap(),
            NetProfile::sigma_lan()
        );
        assert_eq!(NetProfile::parse("none").unwrap(), NetProfile::none());
        assert!(NetProfile::none().is_none());
        assert_eq!(NetProfile::lan().bandwidth_bps, Some(1e9));
        assert_eq!(NetProfile::lan().rtt, Duration::from_micros(500));
        assert_eq!(NetProfile::wan().bandwidth_bps, Some(400e6));
        assert_eq!(NetProfile::wan().rtt, Duration::from_millis(4));
        assert_eq!(NetProfile::sigma_lan().bandwidth_bps, Some(9.4e9));
        assert_eq!(NetProfile::sigma_lan().rtt, Duration::from_micros(50));
    }

    #[test]
    fn custom_profiles() {
        let p = NetProfile::parse("10mbps,20ms").unwrap();
        assert_eq!(p.bandwidth_bps, Some(10e6));
        assert_eq!(p.rtt, Duration::from_millis(20));
        let p = NetProfile::parse("1gbps, 0.5ms").unwrap();
        assert_eq!(p.bandwidth_bps, Some(1e9));
        assert_eq!(p.rtt, Duration::from_micros(500));
        let p = NetProfile::parse("1e9,0.004s").unwrap();
        assert_eq!(p.bandwidth_bps, Some(1e9));
        assert_eq!(p.rtt, Duration::from_millis(4));
        let p = NetProfile::parse("400Mbps,4ms").unwrap();
        assert_eq!(p.bandwidth_bps, Some(400e6));
        let p = NetProfile::parse("9.4gbit,50us").unwrap();
        assert!((p.bandwidth_bps.unwrap() - 9.4e9).abs() < 1.0);
        assert_eq!(p.rtt, Duration::from_micros(50));
        let p = NetProfile::parse("2.5e6,1ms").unwrap();
        assert_eq!(p.bandwidth_bps, Some(2.5e6));
        let p = NetProfile::parse("inf,3ms").unwrap();
        assert_eq!(p.bandwidth_bps, None);
        assert_eq!(p.rtt, Duration::from_millis(3));
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "fast",
            "lan2",
            "10mbps",
            "10mbps,",
            ",20ms",
            "abc,20ms",
            "10mbps,20",
            "10mbps,20parsecs",
            "10furlongs,20ms",
            "0mbps,1ms",
            "-5mbps,1ms",
            "10mbps,-1ms",
            "nan,1ms",
            "1e999,1ms",
            "1,2,3",
            "e9,1ms",
            "1.2.3mbps,1ms",
            // Found by fuzzing: a positive but tiny bandwidth made every send panic.
            "2e-204bps,3417s",
            "0.5bps,1ms",
        ] {
            match NetProfile::parse(s) {
                Err(NetError::BadProfile { input, .. }) => assert_eq!(input, s),
                other => panic!("{s:?} should be rejected, got {other:?}"),
            }
        }
    }

    #[test]
    fn one_way_time_model() {
        let p = NetProfile::parse("10mbps,20ms").unwrap();
        // 125 000 bytes = 1 Mbit = 100 ms at 10 Mbit/s, plus 10 ms one way.
        assert_eq!(p.one_way_time(125_000), Duration::from_millis(110));
        assert_eq!(p.one_way_time(0), Duration::from_millis(10));
        assert_eq!(NetProfile::none().one_way_time(1 << 30), Duration::ZERO);
        // The slowest link accepted, the largest frame: a finite time, no panic.
        let slow = NetProfile::parse("1bps,3600s").unwrap();
        assert!(slow.one_way_time(usize::MAX) >= Duration::from_secs(1 << 40));
    }
}
