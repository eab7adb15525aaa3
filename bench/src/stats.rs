//! Percentiles and the printed table.

use std::time::Duration;

#[derive(Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Nearest-rank percentile; zero when empty.
    pub fn pct(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.0.clone();
        v.sort();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn p50(&self) -> Duration {
        self.pct(50.0)
    }

    pub fn p99(&self) -> Duration {
        self.pct(99.0)
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[derive(Default)]
pub struct Table {
    lines: Vec<String>,
}

impl Table {
    pub fn section(&mut self, title: &str) {
        if !self.lines.is_empty() {
            self.lines.push(String::new());
        }
        self.lines.push(title.to_string());
    }

    pub fn row(&mut self, label: &str, d: Duration) {
        self.lines.push(format!("  {label:<44} {:>11}", ms(d)));
    }

    /// `heyvm` figure, baseline figure, and how many times slower heyvm is.
    pub fn row_ratio(&mut self, label: &str, d: Duration, base_label: &str, base: Duration) {
        let ratio = if base.is_zero() { f64::NAN } else { d.as_secs_f64() / base.as_secs_f64() };
        self.lines.push(format!("  {label:<44} {:>11}   vs {base_label}: {}   ratio {ratio:.1}x", ms(d), ms(base)));
    }

    pub fn line(&mut self, text: &str) {
        self.lines.push(text.to_string());
    }

    pub fn render(&self) -> String {
        self.lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.push(Duration::from_millis(i));
        }
        assert_eq!(s.p50(), Duration::from_millis(50));
        assert_eq!(s.p99(), Duration::from_millis(99));
        assert_eq!(Samples::default().p50(), Duration::ZERO);
    }
}
