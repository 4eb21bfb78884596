//! Typed value parsers: what each flag allows lives on the flag, so a bad value is refused by
//! clap before anything runs, with a message naming the flag, its variable, the rule and the
//! value.

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::ops::RangeInclusive;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use registrar_core::desired::Visibility;
use registrar_core::enable::EnablePolicy;
use registrar_core::plan::Policy;

/// A whole number in a range (or 0 for "off"), parsed into `T`.
#[derive(Debug)]
pub struct Whole<T> {
    range: RangeInclusive<u64>,
    seconds: bool,
    zero_is_off: bool,
    why: Option<&'static str>,
    into: PhantomData<fn() -> T>,
}

// Derived `Clone` would require `T: Clone`; the parser holds no `T`.
impl<T> Clone for Whole<T> {
    fn clone(&self) -> Self {
        Self {
            range: self.range.clone(),
            into: PhantomData,
            ..*self
        }
    }
}

/// At least `min`.
pub fn at_least<T>(min: u64) -> Whole<T> {
    within(min..=u64::MAX)
}

/// At most `max`.
pub fn at_most<T>(max: u64) -> Whole<T> {
    within(0..=max)
}

/// Inside `range`.
pub fn within<T>(range: RangeInclusive<u64>) -> Whole<T> {
    Whole {
        range,
        seconds: false,
        zero_is_off: false,
        why: None,
        into: PhantomData,
    }
}

impl<T> Whole<T> {
    /// The number is a count of seconds (said in the rule).
    pub fn seconds(self) -> Self {
        Self {
            seconds: true,
            ..self
        }
    }

    /// 0 is allowed too, and turns the feature off.
    pub fn or_off(self) -> Self {
        Self {
            zero_is_off: true,
            ..self
        }
    }

    /// Where the limit comes from (said in the rule).
    pub fn because(self, why: &'static str) -> Self {
        Self {
            why: Some(why),
            ..self
        }
    }

    fn allows(&self, n: u64) -> bool {
        self.range.contains(&n) || (self.zero_is_off && n == 0)
    }

    /// The rule in words: "must be at least 1 second", "must be 1..=43200 seconds (the SQS limit)".
    fn rule(&self) -> String {
        let (min, max) = (*self.range.start(), *self.range.end());
        let unit = |n: u64| match (self.seconds, n) {
            (false, _) => String::new(),
            (true, 1) => " second".to_owned(),
            (true, _) => " seconds".to_owned(),
        };
        let bounds = match (min, max) {
            (min, u64::MAX) => format!("at least {min}{}", unit(min)),
            (0, max) => format!("at most {max}{}", unit(max)),
            (min, max) => format!("{min}..={max}{}", unit(max)),
        };
        let off = if self.zero_is_off { "0 (off) or " } else { "" };
        let why = self.why.map(|w| format!(" ({w})")).unwrap_or_default();
        format!("must be {off}{bounds}{why}")
    }
}

impl<T> TypedValueParser for Whole<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let n = clap::value_parser!(u64).parse_ref(cmd, arg, value)?;
        match T::try_from(n) {
            Ok(v) if self.allows(n) => Ok(v),
            _ => Err(refused(cmd, arg, &self.rule(), &n.to_string())),
        }
    }
}

/// A share between 0 and 1 (`--max-delete-fraction`).
#[derive(Debug, Clone, Copy)]
pub struct Fraction;

impl TypedValueParser for Fraction {
    type Value = f64;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<f64, clap::Error> {
        let f = (|s: &str| s.parse::<f64>()).parse_ref(cmd, arg, value)?;
        if (0.0..=1.0).contains(&f) {
            Ok(f)
        } else {
            Err(refused(cmd, arg, "must be between 0 and 1", &f.to_string()))
        }
    }
}

/// Requests per second of a client-side rate limit: 0 (off) or 0.1..=1000 (the AgentCore
/// pacing flags).
#[derive(Debug, Clone, Copy)]
pub struct PerSecond;

impl PerSecond {
    const RULE: &str = "must be 0 (off) or 0.1..=1000 requests per second";

    fn allows(r: f64) -> bool {
        r == 0.0 || (0.1..=1000.0).contains(&r)
    }
}

impl TypedValueParser for PerSecond {
    type Value = f64;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<f64, clap::Error> {
        let r = (|s: &str| s.parse::<f64>()).parse_ref(cmd, arg, value)?;
        if Self::allows(r) {
            Ok(r)
        } else {
            Err(refused(cmd, arg, Self::RULE, &r.to_string()))
        }
    }
}

/// An SQS queue URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`).
#[derive(Debug, Clone, Copy)]
pub struct QueueUrl;

impl TypedValueParser for QueueUrl {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let url = clap::builder::StringValueParser::new().parse_ref(cmd, arg, value)?;
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(url)
        } else {
            let rule = "must be a queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)";
            Err(refused(cmd, arg, rule, &format!("{url:?}")))
        }
    }
}

/// "--flag (VARIABLE) rule, got value", as clap prints its own errors (usage, then a hint).
fn refused(cmd: &clap::Command, arg: Option<&clap::Arg>, rule: &str, got: &str) -> clap::Error {
    let flag = arg.and_then(clap::Arg::get_long).unwrap_or("value");
    let var = arg
        .and_then(clap::Arg::get_env)
        .map(|v| format!(" ({})", v.to_string_lossy()))
        .unwrap_or_default();
    clap::Error::raw(
        ErrorKind::ValueValidation,
        format!("--{flag}{var} {rule}, got {got}"),
    )
    .format(&mut cmd.clone())
}

pub fn visibility(s: &str) -> Result<Visibility, String> {
    Visibility::parse(s).ok_or_else(|| {
        format!("unknown visibility {s:?}: use public, private, internal or group-restricted")
    })
}

pub fn policy(s: &str) -> Result<Policy, String> {
    Policy::parse(s)
        .ok_or_else(|| format!("unknown policy {s:?}: use sync, upsert-only or create-only"))
}

pub fn enable(s: &str) -> Result<EnablePolicy, String> {
    EnablePolicy::parse(s)
        .ok_or_else(|| format!("unknown enable policy {s:?}: use none, authenticated or all"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_the_flags_documented_them() {
        assert_eq!(at_least::<usize>(1).rule(), "must be at least 1");
        assert_eq!(
            at_least::<u64>(1).seconds().rule(),
            "must be at least 1 second"
        );
        assert_eq!(
            within::<u64>(1..=43_200)
                .seconds()
                .because("the SQS limit")
                .rule(),
            "must be 1..=43200 seconds (the SQS limit)"
        );
        assert_eq!(
            at_most::<u64>(20).seconds().rule(),
            "must be at most 20 seconds"
        );
        assert_eq!(
            at_least::<u64>(10).seconds().or_off().rule(),
            "must be 0 (off) or at least 10 seconds"
        );
    }

    #[test]
    fn a_rate_is_off_or_a_tenth_to_a_thousand_a_second() {
        for ok in [0.0, 0.1, 2.5, 1000.0] {
            assert!(PerSecond::allows(ok), "{ok}");
        }
        for refused in [0.05, -1.0, 1000.5, f64::NAN, f64::INFINITY] {
            assert!(!PerSecond::allows(refused), "{refused}");
        }
    }

    #[test]
    fn zero_is_allowed_only_when_it_means_off() {
        assert!(at_least::<u64>(10).or_off().allows(0));
        assert!(!at_least::<u64>(10).or_off().allows(9));
        assert!(!at_least::<u64>(10).allows(0));
    }
}
