//! Rows of figures beside the floor's, with their ratio and checks, as a
//! table or as JSON.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub section: String,
    pub what: String,
    pub unit: &'static str,
    pub host: Option<f64>,
    pub floor: Option<f64>,
    /// host / floor: the median of the rounds' ratios where there are rounds.
    pub ratio: Option<f64>,
    /// Shown instead of a number (e.g. "preserved").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<bool>,
}

impl Row {
    pub fn new(section: &str, what: impl Into<String>, unit: &'static str) -> Row {
        Row {
            section: section.into(),
            what: what.into(),
            unit,
            host: None,
            floor: None,
            ratio: None,
            host_text: None,
            floor_text: None,
            target: None,
            pass: None,
        }
    }
    pub fn host(mut self, v: Option<f64>) -> Row {
        self.host = v;
        self
    }
    pub fn floor(mut self, v: Option<f64>) -> Row {
        self.floor = v;
        self
    }
    pub fn ratio(mut self, v: Option<f64>) -> Row {
        self.ratio = v;
        self
    }
    pub fn texts(mut self, host: Option<String>, floor: Option<String>) -> Row {
        self.host_text = host;
        self.floor_text = floor;
        self
    }
    /// A target and whether it is met (unknown when the figure is missing).
    pub fn target(mut self, text: impl Into<String>, pass: Option<bool>) -> Row {
        self.target = Some(text.into());
        self.pass = pass;
        self
    }
    /// `host ≤ limit`, in the row's unit.
    pub fn at_most(self, limit: f64) -> Row {
        let pass = self.host.map(|h| h <= limit);
        let text = format!("≤ {} {}", num(limit), self.unit);
        self.target(text.trim_end(), pass)
    }
    /// `host / floor ≤ k`.
    pub fn within(self, k: f64) -> Row {
        let pass = self.ratio.map(|r| r <= k);
        self.target(format!("≤ {}× floor", num(k)), pass)
    }
}

/// `a / b`, when both are known and `b` is not 0.
pub fn quotient(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b > 0.0).then(|| a / b)
}

/// Numbers with 3 significant digits, without noise like "0.000".
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 100.0 || a == 0.0 || (a.fract() == 0.0 && a < 1e15) {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn cell(v: Option<f64>, text: &Option<String>, unit: &str) -> String {
    match (text, v) {
        (Some(t), _) => t.clone(),
        (None, Some(v)) if unit.is_empty() => num(v),
        (None, Some(v)) => format!("{} {unit}", num(v)),
        (None, None) => "-".into(),
    }
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or_else(String::new, |r| format!("{r:.2}×"))
}

fn mark(pass: Option<bool>, miss: &str) -> &str {
    match pass {
        Some(true) => "ok",
        Some(false) => miss,
        None => "",
    }
}

const HEADER: [&str; 6] = ["", "opzero-host", "floor", "host/floor", "check", ""];

pub fn table(rows: &[Row]) -> String {
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                format!("  {}", r.what),
                cell(r.host, &r.host_text, r.unit),
                cell(r.floor, &r.floor_text, r.unit),
                ratio_cell(r.ratio),
                r.target.clone().unwrap_or_default(),
                mark(r.pass, "MISS").into(),
            ]
        })
        .collect();
    let mut w = HEADER.map(|h| h.chars().count());
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            w[i] = w[i].max(s.chars().count());
        }
    }
    // Text columns left-aligned, figures right-aligned.
    let line = |c: &[String; 6]| {
        let pad = |i: usize| " ".repeat(w[i].saturating_sub(c[i].chars().count()));
        format!(
            "{}{}  {}{}  {}{}  {}{}  {}{}  {}",
            c[0],
            pad(0),
            pad(1),
            c[1],
            pad(2),
            c[2],
            pad(3),
            c[3],
            c[4],
            pad(4),
            c[5]
        )
        .trim_end()
        .to_string()
    };
    let mut out = line(&HEADER.map(String::from));
    out.push('\n');
    let mut section = "";
    for (r, c) in rows.iter().zip(&cells) {
        if r.section != section {
            section = &r.section;
            out.push_str(section);
            out.push('\n');
        }
        out.push_str(&line(c));
        out.push('\n');
    }
    out
}

/// A Markdown table of the same rows, for the README: one bold row per
/// section.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| measurement | opzero-host | floor | host/floor | check | |\n|---|---:|---:|---:|---|---|\n",
    );
    let mut section = "";
    for r in rows {
        if r.section != section {
            section = &r.section;
            out.push_str(&format!("| **{section}** | | | | | |\n"));
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.what,
            cell(r.host, &r.host_text, r.unit),
            cell(r.floor, &r.floor_text, r.unit),
            ratio_cell(r.ratio),
            r.target.clone().unwrap_or_default(),
            mark(r.pass, "**MISS**"),
        ));
    }
    out
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil(secs as i64 / 86_400);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 → (year, month, day), after Howard Hinnant.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(20_781), (2026, 11, 24));
    }

    #[test]
    fn numbers() {
        assert_eq!(num(12345.6), "12346");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(4.5678), "4.57");
        assert_eq!(num(0.01234), "0.012");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(7.0), "7");
    }

    #[test]
    fn table_marks() {
        let rows = vec![
            Row::new("startup", "no filters", "ms")
                .host(Some(4.2))
                .floor(Some(1.0))
                .ratio(quotient(Some(4.2), Some(1.0)))
                .within(3.0),
            Row::new("memory", "idle", "MiB")
                .host(Some(8.0))
                .at_most(10.0),
            Row::new("memory", "wake-ups", "/min")
                .host(Some(3.0))
                .floor(Some(0.0))
                .ratio(quotient(Some(3.0), Some(0.0)))
                .at_most(1.0),
        ];
        let t = table(&rows);
        assert!(t.contains("startup\n"));
        assert!(t.lines().any(|l| l.contains("4.20 ms")
            && l.contains("4.20×")
            && l.contains("≤ 3× floor")
            && l.ends_with("MISS")));
        assert!(
            t.lines()
                .any(|l| l.contains("≤ 10 MiB") && l.ends_with("ok"))
        );
        assert!(
            t.lines()
                .any(|l| l.contains("3 /min") && !l.contains('×') && l.ends_with("MISS"))
        );
        let m = markdown(&rows);
        assert!(m.contains("| no filters | 4.20 ms | 1 ms | 4.20× | ≤ 3× floor | **MISS** |"));
    }

    #[test]
    fn quotients() {
        assert_eq!(quotient(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(quotient(Some(3.0), Some(0.0)), None);
        assert_eq!(quotient(None, Some(2.0)), None);
    }
}
