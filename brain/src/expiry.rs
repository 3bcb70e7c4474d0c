//! Token lifetimes written the way people say them: `30d`, `12h`, `90m`, `2w`.

/// Shortest lifetime accepted: anything shorter is more likely a typo than a plan.
pub const MIN_MS: i64 = 60 * 1000;
/// Longest lifetime accepted (10 years); for "never", leave the expiry out.
pub const MAX_MS: i64 = 3650 * 24 * 60 * 60 * 1000;

/// Parses `<number><unit>` with unit `m`, `h`, `d` or `w` into milliseconds, within
/// [`MIN_MS`]..=[`MAX_MS`].
pub fn parse_lifetime(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{text:?} is not a lifetime: use a number and a unit m, h, d or w (e.g. 30d), between 1m and 3650d"
        )
    };
    // The unit is the last character, not the last byte: `1é` must be refused, not split
    // inside a character.
    let mut chars = text.chars();
    let unit = chars.next_back().ok_or_else(bad)?;
    let digits = chars.as_str();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let unit_ms: i64 = match unit {
        'm' => 60 * 1000,
        'h' => 60 * 60 * 1000,
        'd' => 24 * 60 * 60 * 1000,
        'w' => 7 * 24 * 60 * 60 * 1000,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if (MIN_MS..=MAX_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_and_their_bounds() {
        assert_eq!(parse_lifetime("1m"), Ok(MIN_MS));
        assert_eq!(parse_lifetime("30d"), Ok(30 * 24 * 3600 * 1000));
        assert_eq!(parse_lifetime("2w"), Ok(14 * 24 * 3600 * 1000));
        assert_eq!(parse_lifetime("3650d"), Ok(MAX_MS));
        for bad in [
            "",
            "d",
            "0m",
            "3651d",
            "5",
            "5s",
            "-1d",
            "1.5d",
            "99999999999999999w",
            "1é",
            "é",
            "1dé",
            "é1d",
            "1\u{1F600}",
            "١d",
        ] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
