//! UTC timestamps in whole milliseconds since the Unix epoch, and their RFC 3339 form.
//!
//! The chaincode never reads a clock: timestamps are passed in. Serialized to JSON as an
//! RFC 3339 string with millisecond precision (`2026-11-23T10:00:00.000Z`); encoded in
//! the ledger as an `i64` (little-endian, see docs/FORMAT.md).

use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z. Years 0000 to 9999 are representable in text.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    bincode::Encode,
    bincode::Decode,
)]
pub struct Timestamp(pub i64);

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z in milliseconds: the range RFC 3339
/// text can express.
const MS_MIN: i64 = -62_167_219_200_000;
const MS_MAX: i64 = 253_402_300_799_999;

impl Timestamp {
    /// The timestamp `ms` milliseconds after the epoch.
    pub const fn from_unix_ms(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    /// Whether the timestamp lies in years 0000..=9999, the range RFC 3339 can write.
    pub fn is_representable(self) -> bool {
        (MS_MIN..=MS_MAX).contains(&self.0)
    }

    /// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`), keeping milliseconds
    /// (further fraction digits are truncated). Returns `None` for anything else.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() < 20 || b.len() > 40 {
            return None;
        }
        let num = |from: usize, len: usize| -> Option<i64> {
            let s = b.get(from..from + len)?;
            s.iter().try_fold(0i64, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
            })
        };
        let year = num(0, 4)?;
        let month = num(5, 2)?;
        let day = num(8, 2)?;
        let hour = num(11, 2)?;
        let minute = num(14, 2)?;
        let second = num(17, 2)?;
        if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let mut i = 19;
        let mut millis = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 3 {
                    millis = millis * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            let digits = i - start;
            if digits == 0 {
                return None;
            }
            for _ in digits..3 {
                millis *= 10;
            }
        }
        let offset_minutes = match b.get(i) {
            Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
                let oh = num(i + 1, 2)?;
                let om = num(i + 4, 2)?;
                if oh > 23 || om > 59 {
                    return None;
                }
                let off = oh * 60 + om;
                if sign == b'-' {
                    -off
                } else {
                    off
                }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
        let ts = Timestamp(secs * 1_000 + millis);
        ts.is_representable().then_some(ts)
    }
}

impl Timestamp {
    /// The calendar month (UTC) this instant falls in, as months since January of year
    /// 0: `year * 12 + month - 1`. [`month_text`] writes it back.
    pub fn month_index(self) -> i64 {
        let (y, m, _) = civil_from_days(self.0.div_euclid(86_400_000));
        y * 12 + m - 1
    }
}

/// `YYYY-MM` of a [`Timestamp::month_index`] in years 0000..=9999, `None` outside them.
pub fn month_text(index: i64) -> Option<String> {
    let (y, m) = (index.div_euclid(12), index.rem_euclid(12) + 1);
    (0..=9999).contains(&y).then(|| format!("{y:04}-{m:02}"))
}

/// The inverse of [`month_text`]: `YYYY-MM` to a month index.
pub fn parse_month(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 7
        || b[4] != b'-'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 4 || c.is_ascii_digit())
    {
        return None;
    }
    let y: i64 = text[..4].parse().ok()?;
    let m: i64 = text[5..].parse().ok()?;
    (1..=12).contains(&m).then_some(y * 12 + m - 1)
}

impl Timestamp {
    /// The RFC 3339 text (`YYYY-MM-DDTHH:MM:SS.mmmZ`, 24 bytes) of a timestamp in years
    /// 0000..=9999, written digit by digit: `write!` with width specifiers was a sixth of
    /// the HTTP workers' CPU for a timeline page (two timestamps per record).
    fn rfc3339(self) -> Option<[u8; 24]> {
        if !self.is_representable() {
            return None;
        }
        let ms = self.0.rem_euclid(1_000);
        let secs = self.0.div_euclid(1_000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, m);
        put(8, 2, d);
        put(11, 2, rem / 3_600);
        put(14, 2, (rem % 3_600) / 60);
        put(17, 2, rem % 60);
        put(20, 3, ms);
        Some(out)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds; a timestamp outside years 0000..=9999 is written
    /// as its raw millisecond count, so formatting never fails or panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rfc3339() {
            Some(text) => f.write_str(std::str::from_utf8(&text).expect("ASCII digits")),
            None => write!(f, "{}ms", self.0),
        }
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.rfc3339() {
            Some(text) => s.serialize_str(std::str::from_utf8(&text).expect("ASCII digits")),
            None => s.collect_str(self),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&text).ok_or_else(|| {
            serde::de::Error::custom("expected an RFC 3339 timestamp such as 2026-11-23T10:00:00Z")
        })
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn month_index_and_its_text_round_trip() {
        let at = |text: &str| Timestamp::parse_rfc3339(text).unwrap().month_index();
        assert_eq!(at("2026-11-30T23:59:59.999Z"), 2026 * 12 + 10);
        assert_eq!(at("2026-12-01T00:00:00Z"), 2026 * 12 + 11);
        assert_eq!(at("1969-12-31T23:59:59.999Z"), 1969 * 12 + 11);
        assert_eq!(at("0000-01-01T00:00:00Z"), 0);
        assert_eq!(
            month_text(at("2024-02-29T12:00:00Z")).as_deref(),
            Some("2024-02")
        );
        assert_eq!(parse_month("2024-02"), Some(2024 * 12 + 1));
        for bad in [
            "2024-13",
            "2024-00",
            "2024-1",
            "24-01",
            "2024/01",
            "２０２４-01",
        ] {
            assert_eq!(parse_month(bad), None, "{bad}");
        }
        assert_eq!(month_text(-1), None);
        assert_eq!(month_text(10_000 * 12), None);
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_instants_format_and_parse() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_795_428_000_000, "2026-11-23T10:00:00.000Z"),
            (951_782_400_123, "2000-02-29T00:00:00.123Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
        ];
        for (ms, text) in cases {
            assert_eq!(Timestamp(ms).to_string(), text);
            assert_eq!(Timestamp::parse_rfc3339(text), Some(Timestamp(ms)));
        }
    }

    #[test]
    fn offsets_and_fractions() {
        let utc = Timestamp::parse_rfc3339("2026-11-23T10:00:00Z").unwrap();
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-23T11:30:00+01:30"),
            Some(utc)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-23T08:00:00-02:00"),
            Some(utc)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-23T10:00:00.5Z"),
            Some(Timestamp(utc.0 + 500))
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-23T10:00:00.123456789Z"),
            Some(Timestamp(utc.0 + 123))
        );
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "2026-11-23",
            "2026-11-23T10:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T10:00:00.Z",
            "2026-11-23T10:00:00+0100",
            "2026-11-23T10:00:00Zjunk",
            "２０２６-11-23T10:00:00Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn text_round_trips(ms in MS_MIN..=MS_MAX) {
            let ts = Timestamp(ms);
            prop_assert_eq!(Timestamp::parse_rfc3339(&ts.to_string()), Some(ts));
        }

        /// The digit-by-digit text is what `write!` with widths gives, and JSON holds
        /// the same text.
        #[test]
        fn text_matches_the_formatted_fields(ms in MS_MIN - 10_000..=MS_MAX + 10_000) {
            let ts = Timestamp(ms);
            let want = if ts.is_representable() {
                let secs = ms.div_euclid(1_000);
                let rem = secs.rem_euclid(86_400);
                let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
                format!(
                    "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                    rem / 3_600,
                    (rem % 3_600) / 60,
                    rem % 60,
                    ms.rem_euclid(1_000)
                )
            } else {
                format!("{ms}ms")
            };
            prop_assert_eq!(ts.to_string(), want.clone());
            prop_assert_eq!(serde_json::to_string(&ts).unwrap(), format!("\"{want}\""));
        }
    }
}
