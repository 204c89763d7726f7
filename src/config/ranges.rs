//! Range checks of configuration values, run while a layer is deserialised.
//!
//! A number that parses is not yet a usable value: `run.grace_secs: 1e308` overflows a
//! `Duration` (a panic, exit 101), `NaN` passes every clamp, `interval_ms: 0` spins the governor.
//! Each numeric field names its range with `#[serde(deserialize_with = ...)]`, so a value out of
//! range is refused exactly like a value of the wrong type: a file layer's error carries the YAML
//! parser's `file:line:col`, an environment layer's names the variable, a flag's names the flag.
//!
//! The bounds are generous (they only keep values inside what the code can represent and what a
//! machine can do); they are const generic parameters so each field states its own next to it.

use serde::{Deserialize, Deserializer, de::Error as _};

/// An unsigned integer in `MIN..=MAX`.
pub(crate) fn u64_in<'de, D: Deserializer<'de>, const MIN: u64, const MAX: u64>(
    d: D,
) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    check_u64::<D::Error>(v, MIN, MAX)
}

/// An optional unsigned integer in `MIN..=MAX` (`null` = unset).
pub(crate) fn opt_u64_in<'de, D: Deserializer<'de>, const MIN: u64, const MAX: u64>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    Option::<u64>::deserialize(d)?
        .map(|v| check_u64::<D::Error>(v, MIN, MAX))
        .transpose()
}

/// A `usize` in `MIN..=MAX`.
pub(crate) fn usize_in<'de, D: Deserializer<'de>, const MIN: usize, const MAX: usize>(
    d: D,
) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    check_u64::<D::Error>(v as u64, MIN as u64, MAX as u64).map(|v| v as usize)
}

/// An optional `usize` in `MIN..=MAX`.
pub(crate) fn opt_usize_in<'de, D: Deserializer<'de>, const MIN: usize, const MAX: usize>(
    d: D,
) -> Result<Option<usize>, D::Error> {
    Option::<usize>::deserialize(d)?
        .map(|v| check_u64::<D::Error>(v as u64, MIN as u64, MAX as u64).map(|v| v as usize))
        .transpose()
}

/// A `u32` in `MIN..=MAX`.
pub(crate) fn u32_in<'de, D: Deserializer<'de>, const MIN: u32, const MAX: u32>(
    d: D,
) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    check_u64::<D::Error>(v.into(), MIN.into(), MAX.into()).map(|v| v as u32)
}

/// A finite number of seconds in `0..=MAX` (a `Duration` can hold it).
pub(crate) fn secs_f64<'de, D: Deserializer<'de>, const MAX: u64>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    check_f64::<D::Error>(v, 0.0, MAX as f64)
}

/// An optional CPU percentage: finite, above 0, at most 100 per core of a large machine.
pub(crate) fn opt_percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Option::<f64>::deserialize(d)?
        .map(|v| {
            if v > 0.0 {
                check_f64::<D::Error>(v, 0.0, MAX_PERCENT)
            } else {
                Err(D::Error::custom(format!(
                    "{} is out of range (above 0 up to {MAX_PERCENT})",
                    short(v)
                )))
            }
        })
        .transpose()
}

/// 100% of each of 1024 cores.
const MAX_PERCENT: f64 = 102_400.0;

fn check_u64<E: serde::de::Error>(v: u64, min: u64, max: u64) -> Result<u64, E> {
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(E::custom(format!("{v} is out of range ({min} to {max})")))
    }
}

fn check_f64<E: serde::de::Error>(v: f64, min: f64, max: f64) -> Result<f64, E> {
    if v.is_finite() && (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(E::custom(format!(
            "{} is out of range ({min} to {max})",
            short(v)
        )))
    }
}

/// A float as a user would write it: `1e308`, not 309 digits.
fn short(v: f64) -> String {
    if v.is_finite() && v.abs() >= 1e9 {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// Seconds in a day, a week: the common upper bounds.
pub(crate) const DAY: u64 = 86_400;
pub(crate) const WEEK: u64 = 7 * DAY;
/// Milliseconds in an hour.
pub(crate) const HOUR_MS: u64 = 3_600_000;
/// Megabytes in a pebibyte: more than any machine, small enough that `mb << 20` fits a u64.
pub(crate) const MAX_MB: u64 = 1 << 30;
