//! The throughput chart (processed and failed jobs per minute or per hour) shared by the overview
//! and the queue pages, over the last hour, day or week ([`Range`]), laid out on the server so
//! the page needs no chart library; the `chart.html` partial draws it.
//!
//! The bars are an SVG stretched to the plot's width; the axes are drawn apart from it (the y
//! labels as HTML beside the plot, the x labels in an SVG without a view box, placed in
//! percent), so their text keeps its size on a phone as on a wide screen. The y axis ends at a
//! round number; the x axis names round times (every 10 minutes, every 3 hours, every midnight).

use chrono::Timelike;
use orderly::queue::inspect::MinuteStats;
use serde::Serialize;

use crate::dashboard::format::datetime;

/// Minutes of throughput the queue rows and the hour's chart cover.
pub const CHART_MINUTES: u32 = 60;

/// How far back a throughput chart looks: `?range=1h|24h|7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Range {
    /// The last 60 minutes, a bar per minute.
    #[default]
    Hour,
    /// The last 24 hours, a bar per hour.
    Day,
    /// The last 7 days, a bar per hour.
    Week,
}

impl Range {
    /// Every range, in the order the switch lists them.
    pub const ALL: [Range; 3] = [Range::Hour, Range::Day, Range::Week];

    /// The range of a `range` parameter (`None`: the last hour); `None` for an unknown value.
    pub fn parse(key: Option<&str>) -> Option<Self> {
        match key {
            None | Some("") => Some(Self::Hour),
            Some(key) => Self::ALL.into_iter().find(|r| r.key() == key),
        }
    }

    /// Its URL key.
    pub fn key(self) -> &'static str {
        match self {
            Self::Hour => "1h",
            Self::Day => "24h",
            Self::Week => "7d",
        }
    }

    /// Bars it draws: minutes for the hour, hours otherwise.
    pub fn periods(self) -> u32 {
        match self {
            Self::Hour => CHART_MINUTES,
            Self::Day => 24,
            Self::Week => 7 * 24,
        }
    }

    /// Whether its bars are hours (read from the hourly rollups) rather than minutes.
    pub fn hourly(self) -> bool {
        self != Self::Hour
    }

    fn span(self) -> &'static str {
        match self {
            Self::Hour => "the last 60 minutes",
            Self::Day => "the last 24 hours",
            Self::Week => "the last 7 days",
        }
    }

    fn unit(self) -> &'static str {
        if self.hourly() { "hour" } else { "minute" }
    }
}

/// One link of the range switch.
#[derive(Debug, Clone, Serialize)]
pub struct RangeLink {
    /// `1 h`, `24 h`, `7 d`.
    pub label: &'static str,
    /// The page with that range.
    pub url: String,
    /// The range shown.
    pub current: bool,
}

/// The range switch of a page at `path` (with its own query, if any) showing `current` (the
/// hour is the page's URL as given).
pub fn range_links(path: &str, current: Range) -> Vec<RangeLink> {
    Range::ALL
        .into_iter()
        .map(|range| RangeLink {
            label: match range {
                Range::Hour => "1 h",
                Range::Day => "24 h",
                Range::Week => "7 d",
            },
            url: match (range, path.contains('?')) {
                (Range::Hour, _) => path.to_owned(),
                (range, true) => format!("{path}&range={}", range.key()),
                (range, false) => format!("{path}?range={}", range.key()),
            },
            current: range == current,
        })
        .collect()
}

/// One bar of the chart.
#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    /// Left edge, in view box units.
    pub x: f64,
    /// In view box units: the period's slot less a gap.
    pub width: f64,
    /// Top of the processed part.
    pub processed_y: f64,
    /// Height of the processed part.
    pub processed_height: f64,
    /// Top of the failed part (stacked above processed).
    pub failed_y: f64,
    /// Height of the failed part.
    pub failed_height: f64,
    /// Tooltip: period and numbers.
    pub title: String,
}

/// A label on the x axis.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// Where it stands, in percent of the plot's width.
    pub percent: f64,
    /// `12:10`, `06:00`, `Mon 07`.
    pub label: String,
    /// SVG `text-anchor`: `start` at the left edge, `end` at the right one, `middle` elsewhere,
    /// so no label is cut off.
    pub anchor: &'static str,
}

/// The processed/failed chart of one range.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    /// View box width (the SVG is stretched to the plot's width).
    pub width: u32,
    /// View box height.
    pub height: u32,
    /// The y value of the top line: a round number at or above the highest bar.
    pub max: u64,
    /// The value of the middle line, when it is a whole number.
    pub mid: Option<u64>,
    /// Where the middle line is, in view box units.
    pub mid_y: f64,
    /// Bars, oldest first.
    pub bars: Vec<Bar>,
    /// Labels of the x axis.
    pub ticks: Vec<Tick>,
    /// Completed in the range.
    pub processed: u64,
    /// Failed attempts in the range.
    pub failed: u64,
    /// `per minute, last 60 minutes`.
    pub caption: String,
    /// Text alternative for screen readers.
    pub summary: String,
}

fn nice_ceiling(value: u64) -> u64 {
    let value = value.max(1);
    let magnitude = 10u64.pow(value.ilog10());
    for step in [1, 2, 5, 10] {
        if value <= step * magnitude {
            return step * magnitude;
        }
    }
    10 * magnitude
}

/// Whether the period starting at `ms` gets a label on the x axis of `range`, and which.
fn tick_label(range: Range, ms: i64) -> Option<String> {
    let at = datetime(ms)?;
    match range {
        Range::Hour => (at.minute() % 10 == 0).then(|| at.format("%H:%M").to_string()),
        Range::Day => (at.hour() % 3 == 0).then(|| at.format("%H:%M").to_string()),
        Range::Week => (at.hour() == 0).then(|| at.format("%a %d").to_string()),
    }
}

/// Lays out `periods` (minutes or hours as `range` says) as stacked bars, processed below and
/// failed on top.
pub fn chart(periods: &[MinuteStats], range: Range) -> Chart {
    const WIDTH: u32 = 1000;
    const HEIGHT: u32 = 120;
    const TOP: f64 = 1.0;
    let baseline = f64::from(HEIGHT);
    let peak = periods
        .iter()
        .map(|m| m.completed + m.failed)
        .max()
        .unwrap_or(0);
    let max = nice_ceiling(peak);
    let n = periods.len().max(1);
    let slot = f64::from(WIDTH) / n as f64;
    let gap = (slot * 0.2).min(2.0);
    let scale = (baseline - TOP) / max as f64;
    let bars = periods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let processed_height = m.completed as f64 * scale;
            let failed_height = m.failed as f64 * scale;
            let when = datetime(m.minute_ms)
                .map(|t| {
                    if range.hourly() {
                        t.format("%a %d %H:00").to_string()
                    } else {
                        t.format("%H:%M").to_string()
                    }
                })
                .unwrap_or_default();
            Bar {
                x: i as f64 * slot + gap / 2.0,
                width: slot - gap,
                processed_y: baseline - processed_height,
                processed_height,
                failed_y: baseline - processed_height - failed_height,
                failed_height,
                title: format!("{when} UTC: {} processed, {} failed", m.completed, m.failed),
            }
        })
        .collect();
    let ticks = periods
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let label = tick_label(range, m.minute_ms)?;
            let percent = (i as f64 / n as f64 * 1000.0).round() / 10.0;
            Some(Tick {
                anchor: if percent < 4.0 {
                    "start"
                } else if percent > 96.0 {
                    "end"
                } else {
                    "middle"
                },
                percent,
                label,
            })
        })
        .collect();
    let processed = periods.iter().map(|m| m.completed).sum();
    let failed = periods.iter().map(|m| m.failed).sum();
    Chart {
        width: WIDTH,
        height: HEIGHT,
        max,
        mid: max.is_multiple_of(2).then_some(max / 2),
        mid_y: TOP + (baseline - TOP) / 2.0,
        bars,
        ticks,
        processed,
        failed,
        caption: format!("per {}, {} (UTC)", range.unit(), range.span()),
        summary: format!(
            "Jobs per {} over {}: {processed} processed, {failed} failed attempts.",
            range.unit(),
            range.span()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: i64, period_ms: i64, first_ms: i64) -> Vec<MinuteStats> {
        (0..n)
            .map(|i| MinuteStats {
                minute_ms: first_ms + i * period_ms,
                completed: i as u64,
                failed: 1,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn chart_scales_to_a_round_maximum() {
        // 2026-12-01 12:03 UTC onwards.
        let first = 1_796_126_580_000;
        let chart = chart(&series(60, 60_000, first), Range::Hour);
        assert_eq!(chart.max, 100);
        assert_eq!(chart.mid, Some(50));
        assert_eq!(chart.bars.len(), 60);
        assert_eq!(chart.processed, (0..60).sum::<u64>());
        assert!(
            chart
                .bars
                .iter()
                .all(|b| b.failed_y >= 1.0 && b.processed_y <= 120.0)
        );
        // Every ten minutes, at round times.
        let labels: Vec<&str> = chart.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(
            labels,
            ["12:10", "12:20", "12:30", "12:40", "12:50", "13:00"]
        );
        assert_eq!(chart.ticks[0].percent, 11.7);
        assert!(chart.caption.contains("per minute"));
    }

    #[test]
    fn a_week_is_labelled_by_day_and_a_day_every_three_hours() {
        // 2026-12-01 00:00 UTC (a Tuesday), hour by hour.
        let midnight = 1_796_083_200_000;
        let week = chart(&series(168, 3_600_000, midnight), Range::Week);
        let labels: Vec<&str> = week.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "Tue 01", "Wed 02", "Thu 03", "Fri 04", "Sat 05", "Sun 06", "Mon 07"
            ]
        );
        assert_eq!(week.ticks[0].anchor, "start");
        assert_eq!(week.max, 200);
        let day = chart(&series(24, 3_600_000, midnight), Range::Day);
        assert_eq!(day.ticks.len(), 8);
        assert_eq!(day.ticks[1].label, "03:00");
        assert!(day.summary.contains("per hour over the last 24 hours"));
    }

    #[test]
    fn ranges_come_from_the_url() {
        assert_eq!(Range::parse(None), Some(Range::Hour));
        assert_eq!(Range::parse(Some("24h")), Some(Range::Day));
        assert_eq!(Range::parse(Some("7d")), Some(Range::Week));
        assert_eq!(Range::parse(Some("1y")), None);
        let links = range_links("/admin/queues", Range::Day);
        assert_eq!(links[0].url, "/admin/queues");
        assert_eq!(links[2].url, "/admin/queues?range=7d");
        assert!(links[1].current);
        let links = range_links("/admin/queues/emails?state=dead", Range::Hour);
        assert_eq!(links[1].url, "/admin/queues/emails?state=dead&range=24h");
    }
}
