//! Local wall-clock times for people: formatting log timestamps and
//! parsing `--since`/`--until` values. Uses the C library's time zone
//! handling (TZ, /etc/localtime), so heyvm needs no time-zone database.

/// `2026-12-02 14:03:07` in the local time zone.
pub fn format(ts: i64) -> String {
    // SAFETY: localtime_r writes only into the zeroed struct we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t = ts as libc::time_t;
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return ts.to_string();
    }
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// A point in time as seconds since the Unix epoch. Accepts a span back
/// from now (`90s`, `10m`, `2h`, `3d`), `now`, a Unix timestamp (digits
/// only), or a local date and time `YYYY-MM-DD[ HH:MM[:SS]]` (`T` also
/// separates).
pub fn parse(s: &str, now: i64) -> anyhow::Result<i64> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| anyhow::anyhow!("timestamp '{s}' is out of range"));
    }
    let units = [("s", 1), ("m", 60), ("h", 3600), ("d", 86400)];
    for (suffix, mult) in units {
        if let Some(n) = s.strip_suffix(suffix).and_then(|n| n.parse::<i64>().ok()) {
            if n >= 0 {
                return Ok(now - n.saturating_mul(mult));
            }
        }
    }
    local_datetime(s)
        .ok_or_else(|| anyhow::anyhow!("cannot read time '{s}' (examples: 10m, 2h, 3d, 2026-12-02, '2026-12-02 14:00', 1764684000)"))
}

fn local_datetime(s: &str) -> Option<i64> {
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.split('-').map(|p| p.parse::<i32>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&day) {
        return None;
    }
    let (mut h, mut mi, mut sec) = (0, 0, 0);
    if let Some(t) = time {
        let parts: Vec<i32> = t.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        match parts[..] {
            [a, b] => (h, mi) = (a, b),
            [a, b, c] => (h, mi, sec) = (a, b, c),
            _ => return None,
        }
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&sec) {
            return None;
        }
    }
    // SAFETY: a zeroed tm is a valid input; mktime only reads and normalises it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = day;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    tm.tm_isdst = -1; // let the C library decide whether DST applies
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(t as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_timestamps_and_dates() {
        let now = 1_764_684_000;
        assert_eq!(parse("10m", now).unwrap(), now - 600);
        assert_eq!(parse("2h", now).unwrap(), now - 7200);
        assert_eq!(parse("3d", now).unwrap(), now - 3 * 86400);
        assert_eq!(parse("now", now).unwrap(), now);
        assert_eq!(parse("1700000000", now).unwrap(), 1_700_000_000);
        // Whatever the local zone, a formatted time reads back to itself.
        let shown = format(now);
        assert_eq!(parse(&shown, 0).unwrap(), now, "{shown}");
        assert_eq!(parse(&shown.replace(' ', "T"), 0).unwrap(), now);
        let day = parse(&shown[..10], 0).unwrap();
        assert!(day <= now && now - day < 86400 + 3600);
        for bad in ["", "yesterday", "-5m", "2026-13-01", "2026-12-02 25:00", "2026-12-02 10", "10x"] {
            assert!(parse(bad, now).is_err(), "{bad:?} should be refused");
        }
    }
}
