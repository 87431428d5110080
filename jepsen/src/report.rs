//! Results: figures from the history, `results.json`, the plots, and the summary printed
//! at the end of a run.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

use crate::checker::{CheckOutcome, Validity};
use crate::history::{FaultWindow, Kind, Op};

/// Counts of one kind of operation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub attempted: usize,
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

impl Counts {
    fn add(&mut self, kind: Kind) {
        self.attempted += 1;
        match kind {
            Kind::Ok => self.ok += 1,
            Kind::Fail => self.fail += 1,
            _ => self.info += 1,
        }
    }
}

/// The longest stretch of the workload phase without a successful operation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Gap {
    pub seconds: f64,
    pub from_s: f64,
    pub to_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub ops: Counts,
    pub by_f: BTreeMap<String, Counts>,
    pub longest_unavailability: Gap,
    /// Same, counting only operations that change something (writes, creates, leases).
    pub longest_write_unavailability: Gap,
    pub latency_ms_ok: Value,
    pub ok_per_second: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn longest_gap<'a>(ops: impl Iterator<Item = &'a Op>, start: u64, end: u64) -> Gap {
    let mut times: Vec<u64> = ops
        .filter(|o| o.kind == Kind::Ok && o.complete <= end)
        .map(|o| o.complete)
        .collect();
    times.sort_unstable();
    let mut best = Gap::default();
    let mut last = start;
    for t in times.into_iter().chain([end]) {
        let gap = t.saturating_sub(last) as f64 / 1e9;
        if gap > best.seconds {
            best = Gap {
                seconds: gap,
                from_s: last as f64 / 1e9,
                to_s: t as f64 / 1e9,
            };
        }
        last = last.max(t);
    }
    best
}

fn is_write(f: &str) -> bool {
    matches!(f, "cas" | "add" | "acquire" | "release")
}

/// Figures over the operations; unavailability is measured over the workload phase
/// (`0..workload_end` nanoseconds).
pub fn figures(ops: &[Op], workload_end: u64) -> Figures {
    let mut total = Counts::default();
    let mut by_f: BTreeMap<String, Counts> = BTreeMap::new();
    for op in ops {
        total.add(op.kind);
        by_f.entry(op.f.clone()).or_default().add(op.kind);
    }
    let mut latencies: Vec<f64> = ops
        .iter()
        .filter(|o| o.kind == Kind::Ok)
        .map(Op::latency_ms)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let in_workload = || ops.iter().filter(|o| o.invoke < workload_end);
    let ok_in_workload = in_workload().filter(|o| o.kind == Kind::Ok).count();
    Figures {
        ops: total,
        by_f,
        longest_unavailability: longest_gap(in_workload(), 0, workload_end),
        longest_write_unavailability: longest_gap(
            in_workload().filter(|o| is_write(&o.f)),
            0,
            workload_end,
        ),
        latency_ms_ok: json!({
            "p50": percentile(&latencies, 0.5),
            "p99": percentile(&latencies, 0.99),
            "max": latencies.last().copied().unwrap_or(0.0),
        }),
        ok_per_second: ok_in_workload as f64 / (workload_end as f64 / 1e9).max(1e-9),
    }
}

/// Everything `results.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub valid: bool,
    /// `valid`, `invalid` or `unknown` (the checker could not decide, or the run did not
    /// get far enough).
    pub verdict: &'static str,
    pub reasons: Vec<String>,
    pub run: Value,
    pub figures: Figures,
    pub faults: Vec<FaultWindow>,
    pub faults_by_kind: BTreeMap<String, usize>,
    pub checker: CheckOutcome,
    pub cluster: Value,
    pub files: Value,
}

pub fn faults_by_kind(faults: &[FaultWindow]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for f in faults.iter().filter(|f| f.kind != "heal") {
        *out.entry(f.kind.clone()).or_default() += 1;
    }
    out
}

pub fn verdict_name(validity: Validity) -> &'static str {
    match validity {
        Validity::Valid => "valid",
        Validity::Invalid => "invalid",
        Validity::Unknown => "unknown",
    }
}

/// The summary printed at the end of a run.
pub fn summary(results: &Results) -> String {
    let f = &results.figures;
    let mut out = String::new();
    let faults: Vec<String> = results
        .faults_by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    out.push_str(&format!(
        "ops: {} attempted, {} ok, {} fail, {} info ({:.0} ok/s)\n",
        f.ops.attempted, f.ops.ok, f.ops.fail, f.ops.info, f.ok_per_second
    ));
    out.push_str(&format!(
        "faults: {} ({})\n",
        results.faults_by_kind.values().sum::<usize>(),
        if faults.is_empty() {
            "none".to_owned()
        } else {
            faults.join(", ")
        }
    ));
    out.push_str(&format!(
        "longest unavailability: {:.1} s (writes: {:.1} s, from {:.1} s to {:.1} s)\n",
        f.longest_unavailability.seconds,
        f.longest_write_unavailability.seconds,
        f.longest_write_unavailability.from_s,
        f.longest_write_unavailability.to_s
    ));
    out.push_str(&format!(
        "checker: {} in {:.2} s: {}\n",
        results.checker.checker,
        results.checker.elapsed.as_secs_f64(),
        verdict_name(results.checker.validity)
    ));
    for line in &results.checker.explanation {
        out.push_str(&format!("  {line}\n"));
    }
    for reason in &results.reasons {
        out.push_str(&format!("- {reason}\n"));
    }
    out.push_str(&format!(
        "verdict: {}\n",
        if results.valid { "VALID" } else { "NOT VALID" }
    ));
    out
}

fn fault_colour(kind: &str) -> RGBColor {
    match kind {
        "partition" => RGBColor(70, 130, 220),
        "kill" => RGBColor(220, 60, 60),
        "pause" => RGBColor(240, 170, 40),
        "membership" => RGBColor(150, 80, 200),
        _ => RGBColor(150, 150, 150),
    }
}

fn kind_colour(kind: Kind) -> RGBColor {
    match kind {
        Kind::Ok => RGBColor(40, 160, 70),
        Kind::Fail => RGBColor(200, 40, 40),
        _ => RGBColor(240, 150, 0),
    }
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn shade<DB: DrawingBackend, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, DB, CT>,
    faults: &[FaultWindow],
    y: (f64, f64),
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    for f in faults {
        let colour = fault_colour(&f.kind);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(f.start_s, y.0), (f.end_s, y.1)],
            colour.mix(0.15).filled(),
        )))?;
    }
    Ok(())
}

/// `latency.svg`: every operation's latency against its start time, coloured by outcome,
/// fault windows shaded.
pub fn plot_latency(path: &Path, ops: &[Op], faults: &[FaultWindow]) -> PlotResult {
    let x_max = ops
        .iter()
        .map(|o| o.complete as f64 / 1e9)
        .fold(1.0, f64::max);
    let y_max = ops.iter().map(Op::latency_ms).fold(10.0, f64::max) * 1.5;
    let y_min = 0.1;
    let root = SVGBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Latency over time (shaded: partition blue, kill red, pause orange, membership purple)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("latency (ms)")
        .draw()?;
    shade(&mut chart, faults, (y_min, y_max))?;
    for kind in [Kind::Ok, Kind::Fail, Kind::Info] {
        let colour = kind_colour(kind);
        chart
            .draw_series(ops.iter().filter(|o| o.kind == kind).map(|o| {
                Circle::new(
                    (o.invoke as f64 / 1e9, o.latency_ms().max(y_min)),
                    2,
                    colour.filled(),
                )
            }))?
            .label(format!("{kind:?}").to_lowercase())
            .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `throughput.svg`: completions per second by outcome, fault windows shaded.
pub fn plot_throughput(path: &Path, ops: &[Op], faults: &[FaultWindow]) -> PlotResult {
    let seconds = ops
        .iter()
        .map(|o| (o.complete / 1_000_000_000) as usize + 1)
        .max()
        .unwrap_or(1);
    let mut bins: BTreeMap<Kind, Vec<u32>> = BTreeMap::new();
    for kind in [Kind::Ok, Kind::Fail, Kind::Info] {
        bins.insert(kind, vec![0; seconds]);
    }
    for op in ops {
        let kind = if op.kind == Kind::Invoke {
            Kind::Info
        } else {
            op.kind
        };
        if let Some(bin) = bins.get_mut(&kind) {
            bin[(op.complete / 1_000_000_000) as usize] += 1;
        }
    }
    let y_max = bins
        .values()
        .flat_map(|b| b.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let root = SVGBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput (completions per second; shaded: partition blue, kill red, pause orange, membership purple)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..seconds as f64, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("operations / s")
        .draw()?;
    shade(&mut chart, faults, (0.0, y_max))?;
    for (kind, bin) in &bins {
        let colour = kind_colour(*kind);
        chart
            .draw_series(LineSeries::new(
                bin.iter()
                    .enumerate()
                    .map(|(s, n)| (s as f64 + 0.5, f64::from(*n))),
                colour.stroke_width(2),
            ))?
            .label(format!("{kind:?}").to_lowercase())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(f: &str, kind: Kind, invoke_s: f64, complete_s: f64) -> Op {
        Op {
            process: 0,
            f: f.into(),
            invoke_value: Value::Null,
            value: Value::Null,
            kind,
            invoke: (invoke_s * 1e9) as u64,
            complete: (complete_s * 1e9) as u64,
            node: None,
            error: None,
            index: 0,
        }
    }

    #[test]
    fn figures_count_and_find_the_longest_gap() {
        let ops = vec![
            op("read", Kind::Ok, 0.0, 1.0),
            op("cas", Kind::Ok, 1.0, 2.0),
            op("cas", Kind::Info, 2.0, 7.0),
            op("read", Kind::Fail, 3.0, 3.5),
            op("read", Kind::Ok, 7.0, 8.0),
            op("cas", Kind::Ok, 8.0, 9.0),
        ];
        let f = figures(&ops, 10_000_000_000);
        assert_eq!(f.ops.attempted, 6);
        assert_eq!(f.ops.ok, 4);
        assert_eq!(f.by_f["cas"].info, 1);
        assert!((f.longest_unavailability.seconds - 6.0).abs() < 1e-9);
        assert!((f.longest_write_unavailability.seconds - 7.0).abs() < 1e-9);
    }

    #[test]
    fn plots_are_written() {
        let dir = std::env::temp_dir().join(format!("fj-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ops: Vec<Op> = (0..200)
            .map(|i| {
                let t = f64::from(i) * 0.05;
                let kind = [Kind::Ok, Kind::Fail, Kind::Info][i as usize % 3];
                op("read", kind, t, t + 0.003 * f64::from(i % 7 + 1))
            })
            .collect();
        let faults = vec![FaultWindow {
            kind: "partition".into(),
            detail: Value::Null,
            start_s: 2.0,
            end_s: 4.0,
        }];
        plot_latency(&dir.join("latency.svg"), &ops, &faults).unwrap();
        plot_throughput(&dir.join("throughput.svg"), &ops, &faults).unwrap();
        let svg = std::fs::read_to_string(dir.join("latency.svg")).unwrap();
        assert!(svg.contains("<svg"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
