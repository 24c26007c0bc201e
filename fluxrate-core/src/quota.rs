//! [`Quota`]: how many calls per period, with an optional burst, and its parser.

use crate::clock::nanos;
use crate::error::ConfigError;
use core::fmt;
use core::str::FromStr;
use std::time::Duration;

const NS_PER_SEC: u64 = 1_000_000_000;

/// How many calls are allowed per period, and (for the token bucket) how many at once.
///
/// A `Quota` is a plain description: it is checked when a limiter is built, where every bad value
/// becomes a [`ConfigError`]. It can be written in code or parsed from strings such as `"10/s"`,
/// `"100 per minute"` or `"5/500ms"`.
///
/// # Examples
///
/// ```
/// use fluxrate_core::Quota;
/// use std::time::Duration;
///
/// let q: Quota = "100 per minute".parse().unwrap();
/// assert_eq!(q, Quota::per_minute(100));
/// assert_eq!("5/500ms".parse::<Quota>().unwrap(), Quota::new(5, Duration::from_millis(500)));
/// assert_eq!(Quota::per_second(10).with_burst(20).burst(), 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    calls: u64,
    period: Duration,
    burst: Option<u64>,
}

impl Quota {
    /// `calls` per `period`.
    pub const fn new(calls: u64, period: Duration) -> Self {
        Self {
            calls,
            period,
            burst: None,
        }
    }

    /// `calls` per second.
    pub const fn per_second(calls: u64) -> Self {
        Self::new(calls, Duration::from_secs(1))
    }

    /// `calls` per minute.
    pub const fn per_minute(calls: u64) -> Self {
        Self::new(calls, Duration::from_secs(60))
    }

    /// `calls` per hour.
    pub const fn per_hour(calls: u64) -> Self {
        Self::new(calls, Duration::from_secs(3600))
    }

    /// `calls` per day.
    pub const fn per_day(calls: u64) -> Self {
        Self::new(calls, Duration::from_secs(86_400))
    }

    /// `calls` per `period_secs` seconds given as a float (for example `0.5`).
    ///
    /// NaN, infinite, negative, zero or overflowing periods are a [`ConfigError`].
    pub fn from_secs_f64(calls: u64, period_secs: f64) -> Result<Self, ConfigError> {
        if !period_secs.is_finite() || period_secs <= 0.0 {
            return Err(ConfigError::InvalidFloat { what: "period" });
        }
        let period =
            Duration::try_from_secs_f64(period_secs).map_err(|_| ConfigError::PeriodTooLong)?;
        if period.is_zero() {
            return Err(ConfigError::ZeroPeriod);
        }
        Ok(Self::new(calls, period))
    }

    /// `rate` calls per second given as a float (for example `0.5` or `2.5`).
    ///
    /// A whole rate is taken exactly (`10.0` is 10 per second). Otherwise the quota is one call
    /// per `⌈1 s / rate⌉` (whole nanoseconds, rounded up so the limit is never looser than
    /// asked). NaN, infinite, zero or negative rates, rates above one call per nanosecond and
    /// rates so low that the period overflows are a [`ConfigError`].
    ///
    /// ```
    /// use fluxrate_core::Quota;
    /// use std::time::Duration;
    ///
    /// assert_eq!(Quota::per_second_f64(0.5).unwrap(), Quota::new(1, Duration::from_secs(2)));
    /// assert_eq!(Quota::per_second_f64(10.0).unwrap(), Quota::per_second(10));
    /// assert!(Quota::per_second_f64(f64::NAN).is_err());
    /// ```
    pub fn per_second_f64(rate: f64) -> Result<Self, ConfigError> {
        if !rate.is_finite() || rate <= 0.0 {
            return Err(ConfigError::InvalidFloat { what: "rate" });
        }
        if rate.fract() == 0.0 && (1.0..=1e9).contains(&rate) {
            return Ok(Self::per_second(rate as u64));
        }
        if rate > 1e9 {
            return Err(ConfigError::IntervalTooSmall {
                calls: if rate >= u64::MAX as f64 {
                    u64::MAX
                } else {
                    rate as u64
                },
                period_ns: NS_PER_SEC,
            });
        }
        let period_ns = (NS_PER_SEC as f64 / rate).ceil();
        if period_ns >= u64::MAX as f64 {
            return Err(ConfigError::PeriodTooLong);
        }
        Ok(Self::new(1, Duration::from_nanos(period_ns as u64)))
    }

    /// The same quota with a burst: how many calls may pass at once after an idle time (token
    /// bucket) or how many may wait in the queue (leaky bucket). Defaults to `calls`.
    pub const fn with_burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Calls per period.
    pub const fn calls(&self) -> u64 {
        self.calls
    }

    /// The period.
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// The burst: as set by [`with_burst`](Self::with_burst), else `calls`.
    pub const fn burst(&self) -> u64 {
        match self.burst {
            Some(b) => b,
            None => self.calls,
        }
    }

    /// The period in nanoseconds, checked.
    pub(crate) fn period_ns(&self) -> Result<u64, ConfigError> {
        if self.period.is_zero() {
            return Err(ConfigError::ZeroPeriod);
        }
        nanos(self.period).ok_or(ConfigError::PeriodTooLong)
    }

    /// Validated `(calls, period_ns)`: calls ≥ 1, period > 0 and at most one call per ns.
    pub(crate) fn validated(&self) -> Result<(u64, u64), ConfigError> {
        if self.calls == 0 {
            return Err(ConfigError::ZeroCalls);
        }
        let period_ns = self.period_ns()?;
        if self.calls > period_ns {
            return Err(ConfigError::IntervalTooSmall {
                calls: self.calls,
                period_ns,
            });
        }
        Ok((self.calls, period_ns))
    }

    /// The emission interval `T = ceil(period / calls)` in nanoseconds: rounded up, so the
    /// long-run rate never exceeds the configured one.
    ///
    /// # Examples
    ///
    /// ```
    /// use fluxrate_core::Quota;
    /// use std::time::Duration;
    ///
    /// assert_eq!(Quota::per_second(3).emission_interval().unwrap(), Duration::from_nanos(333_333_334));
    /// assert!(Quota::per_second(0).emission_interval().is_err());
    /// ```
    pub fn emission_interval(&self) -> Result<Duration, ConfigError> {
        let (calls, period_ns) = self.validated()?;
        Ok(Duration::from_nanos(period_ns.div_ceil(calls)))
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:?}", self.calls, self.period)?;
        if let Some(b) = self.burst {
            write!(f, " (burst {b})")?;
        }
        Ok(())
    }
}

fn parse_err(input: &str, reason: &'static str) -> ConfigError {
    ConfigError::Parse {
        input: input.to_owned(),
        reason,
    }
}

fn unit_ns(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" | "nanosecond" | "nanoseconds" => 1,
        "us" | "µs" | "microsecond" | "microseconds" => 1_000,
        "ms" | "millisecond" | "milliseconds" | "millis" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => NS_PER_SEC,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * NS_PER_SEC,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600 * NS_PER_SEC,
        "d" | "day" | "days" => 86_400 * NS_PER_SEC,
        _ => return None,
    })
}

/// Parse `"<amount><unit>"` such as `"500ms"`, `"1.5s"` or `"minute"` into nanoseconds.
pub(crate) fn parse_period(input: &str, text: &str) -> Result<u64, ConfigError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (amount, unit) = text.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let per_unit = unit_ns(&unit).ok_or_else(|| {
        parse_err(
            input,
            "expected a time unit: ns, us, ms, s, m(in), h(our) or d(ay)",
        )
    })?;
    if amount.is_empty() {
        return Ok(per_unit);
    }
    let (int, frac) = amount.split_once('.').unwrap_or((amount, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(parse_err(input, "expected a number before the unit"));
    }
    let digits = |s: &str| -> Result<u128, ConfigError> {
        if s.is_empty() {
            return Ok(0);
        }
        s.parse::<u128>()
            .map_err(|_| parse_err(input, "period amount is too large"))
    };
    let whole = digits(int)?.checked_mul(u128::from(per_unit));
    let scale = 10u128
        .checked_pow(u32::try_from(frac.len()).unwrap_or(u32::MAX))
        .ok_or_else(|| parse_err(input, "too many decimal places"))?;
    let part = digits(frac)?.checked_mul(u128::from(per_unit));
    let total = match (whole, part) {
        (Some(w), Some(p)) => {
            if p % scale != 0 {
                return Err(parse_err(
                    input,
                    "period is not a whole number of nanoseconds",
                ));
            }
            w.checked_add(p / scale)
        }
        _ => None,
    };
    let total = total.ok_or(ConfigError::PeriodTooLong)?;
    if total == 0 {
        return Err(ConfigError::ZeroPeriod);
    }
    u64::try_from(total).map_err(|_| ConfigError::PeriodTooLong)
}

impl FromStr for Quota {
    type Err = ConfigError;

    /// Parse `"<calls>/<period>"` or `"<calls> per <period>"`, where the period is a unit
    /// (`s`, `second`, `minute`, …) optionally preceded by an amount (`500ms`, `2 hours`,
    /// `1.5s`). Whitespace and case do not matter.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let lower = input.trim().to_ascii_lowercase();
        let (calls, period) = if let Some((c, p)) = lower.split_once('/') {
            (c, p)
        } else if let Some((c, p)) = lower.split_once(" per ") {
            (c, p)
        } else {
            return Err(parse_err(
                input,
                "expected \"<calls>/<period>\" or \"<calls> per <period>\"",
            ));
        };
        let calls = calls.trim();
        if calls.is_empty() || !calls.bytes().all(|b| b.is_ascii_digit()) {
            return Err(parse_err(input, "expected a positive integer call count"));
        }
        let calls: u64 = calls
            .parse()
            .map_err(|_| parse_err(input, "call count does not fit in 64 bits"))?;
        if calls == 0 {
            return Err(ConfigError::ZeroCalls);
        }
        let period_ns = parse_period(input, period)?;
        Ok(Self::new(calls, Duration::from_nanos(period_ns)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let ok = [
            ("10/s", Quota::per_second(10)),
            ("100 per minute", Quota::per_minute(100)),
            ("5/500ms", Quota::new(5, Duration::from_millis(500))),
            ("100/minute", Quota::per_minute(100)),
            (" 7 / 2 hours ", Quota::new(7, Duration::from_secs(7200))),
            ("3/1.5s", Quota::new(3, Duration::from_millis(1500))),
            ("1 PER DAY", Quota::per_day(1)),
            ("2/250us", Quota::new(2, Duration::from_micros(250))),
        ];
        for (s, q) in ok {
            assert_eq!(s.parse::<Quota>(), Ok(q), "{s}");
        }
    }

    #[test]
    fn rejects_bad_strings_with_typed_errors() {
        assert_eq!("0/s".parse::<Quota>(), Err(ConfigError::ZeroCalls));
        assert_eq!("5/0ms".parse::<Quota>(), Err(ConfigError::ZeroPeriod));
        assert_eq!(
            "5/99999999999999999999999d".parse::<Quota>(),
            Err(ConfigError::PeriodTooLong)
        );
        for bad in [
            "",
            "10",
            "ten/s",
            "-1/s",
            "10/",
            "10/fortnight",
            "1.5/s",
            "10/1.2.3s",
            "10/0.5ns",
        ] {
            let err = bad.parse::<Quota>().unwrap_err();
            assert!(
                matches!(err, ConfigError::Parse { .. }),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn float_periods_are_checked() {
        for bad in [f64::NAN, f64::INFINITY, -1.0, 0.0, f64::NEG_INFINITY] {
            assert_eq!(
                Quota::from_secs_f64(1, bad),
                Err(ConfigError::InvalidFloat { what: "period" })
            );
        }
        assert_eq!(
            Quota::from_secs_f64(1, 1e30),
            Err(ConfigError::PeriodTooLong)
        );
        assert_eq!(
            Quota::from_secs_f64(1, f64::MIN_POSITIVE),
            Err(ConfigError::ZeroPeriod)
        );
        assert_eq!(
            Quota::from_secs_f64(2, 0.5).unwrap(),
            Quota::new(2, Duration::from_millis(500))
        );
    }

    #[test]
    fn emission_interval_rounds_up() {
        let q = Quota::new(3, Duration::from_nanos(10));
        assert_eq!(q.emission_interval().unwrap(), Duration::from_nanos(4));
        let q = Quota::new(11, Duration::from_nanos(10));
        assert!(matches!(
            q.emission_interval(),
            Err(ConfigError::IntervalTooSmall { .. })
        ));
    }
}
