//! The throughput chart (processed and failed jobs per minute) shared by the overview and the
//! queue pages, laid out as SVG geometry on the server so the page needs no chart library; the
//! `chart.html` partial draws it.

use orderly::queue::inspect::MinuteStats;
use serde::Serialize;

use crate::dashboard::format::datetime;

/// Minutes of throughput the charts show.
pub const CHART_MINUTES: u32 = 60;

/// One minute of the chart.
#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    /// Left edge, in view box units.
    pub x: f64,
    /// In view box units: the minute's slot less a gap, never under one unit.
    pub width: f64,
    /// Top of the processed part.
    pub processed_y: f64,
    /// Height of the processed part.
    pub processed_height: f64,
    /// Top of the failed part (stacked above processed).
    pub failed_y: f64,
    /// Height of the failed part.
    pub failed_height: f64,
    /// Tooltip: minute and numbers.
    pub title: String,
}

/// The processed/failed per minute chart.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    /// View box width.
    pub width: u32,
    /// View box height.
    pub height: u32,
    /// Bottom of the plot (the x axis).
    pub baseline: f64,
    /// Left edge of the plot.
    pub left: f64,
    /// The y value of the top line.
    pub max: u64,
    /// Bars, oldest first.
    pub bars: Vec<Bar>,
    /// Completed in the window.
    pub processed: u64,
    /// Failed attempts in the window.
    pub failed: u64,
    /// Minutes shown.
    pub minutes: usize,
    /// Text alternative for screen readers.
    pub summary: String,
}

/// Adds per-minute stats of several queues together (all cover the same minutes).
pub fn sum_minutes<'a>(series: impl IntoIterator<Item = &'a [MinuteStats]>) -> Vec<MinuteStats> {
    let mut total: Vec<MinuteStats> = Vec::new();
    for minutes in series {
        if total.is_empty() {
            total = minutes.to_vec();
            continue;
        }
        for (sum, minute) in total.iter_mut().zip(minutes) {
            sum.enqueued += minute.enqueued;
            sum.completed += minute.completed;
            sum.failed += minute.failed;
            sum.retried += minute.retried;
            sum.dead += minute.dead;
        }
    }
    total
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

/// Lays out `minutes` as stacked bars (processed below, failed on top).
pub fn chart(minutes: &[MinuteStats]) -> Chart {
    const WIDTH: u32 = 1200;
    const HEIGHT: u32 = 150;
    const LEFT: f64 = 36.0;
    const TOP: f64 = 8.0;
    const BASELINE: f64 = 128.0;
    let peak = minutes
        .iter()
        .map(|m| m.completed + m.failed)
        .max()
        .unwrap_or(0);
    let max = nice_ceiling(peak);
    let slot = (f64::from(WIDTH) - LEFT) / minutes.len().max(1) as f64;
    let scale = (BASELINE - TOP) / max as f64;
    let bars = minutes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let processed_height = m.completed as f64 * scale;
            let failed_height = m.failed as f64 * scale;
            let minute = datetime(m.minute_ms)
                .map(|t| t.format("%H:%M").to_string())
                .unwrap_or_default();
            Bar {
                x: LEFT + i as f64 * slot + 1.0,
                width: (slot - 2.0).max(1.0),
                processed_y: BASELINE - processed_height,
                processed_height,
                failed_y: BASELINE - processed_height - failed_height,
                failed_height,
                title: format!(
                    "{minute} UTC: {} processed, {} failed",
                    m.completed, m.failed
                ),
            }
        })
        .collect();
    let processed = minutes.iter().map(|m| m.completed).sum();
    let failed = minutes.iter().map(|m| m.failed).sum();
    Chart {
        width: WIDTH,
        height: HEIGHT,
        baseline: BASELINE,
        left: LEFT,
        max,
        bars,
        processed,
        failed,
        minutes: minutes.len(),
        summary: format!(
            "Jobs per minute over the last {} minutes: {processed} processed, {failed} failed attempts.",
            minutes.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_scales_to_a_round_maximum() {
        let minutes: Vec<MinuteStats> = (0..60)
            .map(|i| MinuteStats {
                minute_ms: i * 60_000,
                completed: i as u64,
                failed: 1,
                ..Default::default()
            })
            .collect();
        let chart = chart(&minutes);
        assert_eq!(chart.max, 100);
        assert_eq!(chart.bars.len(), 60);
        assert_eq!(chart.processed, (0..60).sum::<u64>());
        assert!(
            chart
                .bars
                .iter()
                .all(|b| b.failed_y >= 8.0 && b.processed_y <= 128.0)
        );
    }
}
