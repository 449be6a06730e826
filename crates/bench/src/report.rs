//! Figures: the medians of each cell's runs, as a table on the terminal, JSON,
//! the table in docs/performance.md, and an SVG of the latency percentiles
//! and of goodput against offered load.

use std::{collections::BTreeMap, path::Path};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// One run of one cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Successful calls per second.
    pub throughput: f64,
    /// Latency percentiles of successful calls, microseconds.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th.
    pub p99: u64,
    /// 99.9th.
    pub p999: u64,
    /// Slowest.
    pub max: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Calls sent.
    pub sent: u64,
    /// Server CPU per successful call, microseconds, by process.
    pub cpu_us: BTreeMap<String, f64>,
    /// Peak resident memory during the run, bytes, by process.
    pub rss_peak: BTreeMap<String, u64>,
}

impl Run {
    /// Server CPU per call, all processes together.
    pub fn cpu_total(&self) -> f64 {
        self.cpu_us.values().sum()
    }
}

/// One scenario under one load, measured `runs.len()` times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// Scenario name.
    pub scenario: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// `closed, 32 callers` or `open, 500/s`.
    pub load: String,
    /// Offered rate for open-loop cells.
    pub offered: Option<f64>,
    /// Every run.
    pub runs: Vec<Run>,
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median_u(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The medians of a cell.
#[derive(Debug, Clone, Serialize)]
pub struct Median {
    /// Successful calls per second.
    pub throughput: f64,
    /// Percentiles, µs.
    pub p50: u64,
    /// 90th.
    pub p90: u64,
    /// 99th.
    pub p99: u64,
    /// 99.9th.
    pub p999: u64,
    /// Max.
    pub max: u64,
    /// CPU µs per call, all processes.
    pub cpu_us: f64,
    /// CPU µs per call, by process.
    pub cpu_by_process: BTreeMap<String, f64>,
    /// Peak RSS, bytes, by process (the largest of the runs).
    pub rss_peak: BTreeMap<String, u64>,
    /// Errors summed over runs.
    pub errors: BTreeMap<String, u64>,
}

impl Cell {
    /// The medians of its runs.
    pub fn median(&self) -> Median {
        let f = |g: fn(&Run) -> f64| median_f(self.runs.iter().map(g).collect());
        let u = |g: fn(&Run) -> u64| median_u(self.runs.iter().map(g).collect());
        let mut cpu_by_process = BTreeMap::new();
        let mut rss_peak: BTreeMap<String, u64> = BTreeMap::new();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for run in &self.runs {
            for name in run.cpu_us.keys() {
                cpu_by_process.entry(name.clone()).or_insert_with(|| {
                    median_f(
                        self.runs
                            .iter()
                            .map(|r| r.cpu_us.get(name).copied().unwrap_or(0.0))
                            .collect(),
                    )
                });
            }
            for (name, rss) in &run.rss_peak {
                let e = rss_peak.entry(name.clone()).or_default();
                *e = (*e).max(*rss);
            }
            for (k, v) in &run.errors {
                *errors.entry(k.clone()).or_default() += v;
            }
        }
        Median {
            throughput: f(|r| r.throughput),
            p50: u(|r| r.p50),
            p90: u(|r| r.p90),
            p99: u(|r| r.p99),
            p999: u(|r| r.p999),
            max: u(|r| r.max),
            cpu_us: f(Run::cpu_total),
            cpu_by_process,
            rss_peak,
            errors,
        }
    }
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// CPU, cores, kernel.
    pub machine: String,
    /// The command line.
    pub command: String,
    /// How processes were pinned.
    pub pinning: String,
    /// Runs per cell.
    pub repeats: usize,
    /// Each cell.
    pub cells: Vec<Cell>,
    /// Resident memory by process just after start (before data or load), bytes.
    pub rss_idle: BTreeMap<String, u64>,
    /// Start to SERVING over a migrated database, ms, by service.
    pub start_ms: BTreeMap<String, f64>,
}

fn ms(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0}", us as f64 / 1000.0)
    } else {
        format!("{:.2}", us as f64 / 1000.0)
    }
}

/// `750 µs`, `12 ms`, `3.2 s` for a time in microseconds.
fn duration_label(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.0} ms", us / 1_000.0)
    } else {
        format!("{:.1} s", us / 1_000_000.0)
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / 1_048_576.0)
}

impl Report {
    fn echo(&self) -> Option<Median> {
        self.cells
            .iter()
            .find(|c| c.scenario == "echo" && c.offered.is_none())
            .map(Cell::median)
    }

    /// The table as Markdown.
    pub fn markdown(&self) -> String {
        let echo = self.echo();
        let mut out = String::from(
            "| scenario | backend | load | throughput/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/call | CPU × echo | peak RSS MB | errors |\n\
             |---|---|---|---:|---:|---:|---:|---:|---:|---|---|\n",
        );
        for cell in &self.cells {
            let m = cell.median();
            let ratio = echo
                .as_ref()
                .filter(|e| e.cpu_us > 0.0)
                .map_or("–".into(), |e| format!("{:.1}×", m.cpu_us / e.cpu_us));
            let rss = m
                .rss_peak
                .iter()
                .map(|(n, b)| format!("{n} {}", mb(*b)))
                .collect::<Vec<_>>()
                .join(", ");
            let errors = if m.errors.is_empty() {
                "0".to_owned()
            } else {
                m.errors
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push_str(&format!(
                "| {} | {} | {} | {:.0} | {} | {} | {} | {:.0} | {} | {} | {} |\n",
                cell.scenario,
                cell.backend,
                cell.load,
                m.throughput,
                ms(m.p50),
                ms(m.p99),
                ms(m.p999),
                m.cpu_us,
                ratio,
                rss,
                errors
            ));
        }
        out.push_str(&self.ratios());
        out.push_str("\n| service | idle RSS MB (just started) | start to SERVING ms (migrated SQLite) |\n|---|---:|---:|\n");
        for (name, rss) in &self.rss_idle {
            let start = self
                .start_ms
                .get(name)
                .map_or("–".into(), |t| format!("{t:.0}"));
            out.push_str(&format!("| {name} | {} | {start} |\n", mb(*rss)));
        }
        out
    }

    /// The figures the targets are stated in, each a ratio within this run.
    fn ratios(&self) -> String {
        let closed = |scenario: &str, backend: &str| {
            self.cells
                .iter()
                .find(|c| c.scenario == scenario && c.backend == backend && c.offered.is_none())
                .map(Cell::median)
        };
        let open: Vec<(f64, Median)> = self
            .cells
            .iter()
            .filter(|c| c.offered.is_some())
            .map(|c| (c.offered.unwrap_or(0.0), c.median()))
            .collect();
        let mut lines = Vec::new();
        if let Some(echo) = closed("echo", "sqlite") {
            for s in ["health", "get-user"] {
                if let Some(m) = closed(s, "sqlite") {
                    lines.push(format!(
                        "| {s}: server CPU per call ÷ echo's | {:.2}× |",
                        m.cpu_us / echo.cpu_us.max(1e-9)
                    ));
                }
            }
        }
        if let (Some(edge), Some(grpc)) =
            (closed("edge-get", "sqlite"), closed("grpc-get", "sqlite"))
        {
            lines.push(format!(
                "| edge-get: server CPU per call ÷ grpc-get's (the same RPC over gRPC) | {:.2}× |",
                edge.cpu_us / grpc.cpu_us.max(1e-9)
            ));
        }
        if let (Some(pg), Some(lite)) = (
            closed("create-order", "postgres"),
            closed("create-order", "sqlite"),
        ) {
            lines.push(format!(
                "| create-order: PostgreSQL throughput ÷ SQLite's | {:.2}× |",
                pg.throughput / lite.throughput.max(1e-9)
            ));
        }
        if let (Some(peak), Some((_, low)), Some((_, high))) = (
            closed("create-order", "sqlite"),
            open.first(),
            open.iter().max_by(|a, b| a.0.total_cmp(&b.0)),
        ) {
            lines.push(format!(
                "| overload: goodput at the highest offered load ÷ the closed loop's peak | {:.2}× |",
                high.throughput / peak.throughput.max(1e-9)
            ));
            lines.push(format!(
                "| overload: p99 at the highest offered load ÷ p99 at the lowest | {:.1}× |",
                high.p99 as f64 / low.p99.max(1) as f64
            ));
        }
        if lines.is_empty() {
            return String::new();
        }
        format!("\n| ratio | measured |\n|---|---:|\n{}\n", lines.join("\n"))
    }

    /// Writes the table between the markers of `doc` (created if missing).
    pub fn write_doc(&self, doc: &Path) -> Result<(), String> {
        const BEGIN: &str = "<!-- bench:begin (written by make bench; edit around it) -->";
        const END: &str = "<!-- bench:end -->";
        let text = std::fs::read_to_string(doc).unwrap_or_default();
        let body = format!(
            "{BEGIN}\n\nMeasured on {} — {}; {} run(s) per cell, medians.\n\n`{}`\n\n{}\n{END}",
            self.machine,
            self.pinning,
            self.repeats,
            self.command,
            self.markdown()
        );
        let new = match (text.find(BEGIN), text.find(END)) {
            (Some(b), Some(e)) if e > b => {
                format!("{}{body}{}", &text[..b], &text[e + END.len()..])
            }
            _ => format!("{text}\n{body}\n"),
        };
        std::fs::write(doc, new).map_err(|e| format!("{}: {e}", doc.display()))
    }

    /// The picture: latency percentiles per scenario (closed loop), and
    /// goodput against offered load for the open-loop cells.
    pub fn write_svg(&self, path: &Path) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (left, right) = root.split_horizontally(600);
        let closed: Vec<&Cell> = self.cells.iter().filter(|c| c.offered.is_none()).collect();
        let top = closed
            .iter()
            .map(|c| c.median().p999)
            .max()
            .unwrap_or(1_000)
            .max(10) as f64
            * 2.0;
        let mut chart = ChartBuilder::on(&left)
            .caption(
                "Latency percentiles per scenario (log scale)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.2f64..3.2f64, (30f64..top).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .y_label_formatter(&|us| duration_label(*us))
            .x_labels(4)
            .x_label_formatter(&|x| {
                ["p50", "p90", "p99", "p99.9"]
                    .get(x.round() as usize)
                    .copied()
                    .unwrap_or("")
                    .to_owned()
            })
            .draw()
            .map_err(|e| err(&e))?;
        for (i, cell) in closed.iter().enumerate() {
            let m = cell.median();
            let color = Palette99::pick(i).to_rgba();
            let points: Vec<(f64, f64)> = [m.p50, m.p90, m.p99, m.p999]
                .iter()
                .enumerate()
                .map(|(x, y)| (x as f64, (*y).max(5) as f64))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(format!("{} ({})", cell.scenario, cell.backend))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
        // Bottom right is empty: nothing answers in under a millisecond at p99.9.
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(|e| err(&e))?;

        let open: Vec<&Cell> = self.cells.iter().filter(|c| c.offered.is_some()).collect();
        let max_offered = open.iter().filter_map(|c| c.offered).fold(1.0f64, f64::max) * 1.05;
        let mut chart = ChartBuilder::on(&right)
            .caption("Overload: goodput against offered load", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            // Room on the right for the last point's p99 label.
            .build_cartesian_2d(0f64..max_offered * 1.15, 0f64..max_offered)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("offered/s")
            .y_desc("goodput/s")
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (max_offered, max_offered)],
                BLACK.mix(0.3),
            ))
            .map_err(|e| err(&e))?
            .label("goodput = offered")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.3)));
        let mut by_scenario: BTreeMap<String, Vec<(f64, f64, u64)>> = BTreeMap::new();
        for cell in &open {
            let m = cell.median();
            by_scenario
                .entry(format!("{} ({})", cell.scenario, cell.backend))
                .or_default()
                .push((cell.offered.unwrap_or(0.0), m.throughput, m.p99));
        }
        for (i, (name, mut measured)) in by_scenario.into_iter().enumerate() {
            measured.sort_by(|a, b| a.0.total_cmp(&b.0));
            let points: Vec<(f64, f64)> = measured.iter().map(|(x, y, _)| (*x, *y)).collect();
            // Each point says how long its calls took: goodput alone hides a queue.
            chart
                .draw_series(measured.iter().map(|(x, y, p99)| {
                    Text::new(
                        format!("p99 {}", duration_label(*p99 as f64)),
                        (*x, *y + max_offered * 0.03),
                        ("sans-serif", 12),
                    )
                }))
                .map_err(|e| err(&e))?;
            let color = Palette99::pick(i + 3).to_rgba();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))
    }
}
