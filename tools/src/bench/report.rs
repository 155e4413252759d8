//! What `shmraft bench` reports: the figures of one configuration, the machine, the table, the
//! JSON file and the SVG plot.

use super::baseline::Baselines;
use anyhow::anyhow;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// One node's figures over the measured window.
#[derive(Clone, Debug, Serialize)]
pub struct NodeFigures {
    pub id: u64,
    pub role: String,
    pub syncs: u64,
    pub syncs_per_s: f64,
    pub entries_appended: u64,
    /// Log appends (one per persisted batch): entries per append is the batch size.
    pub append_calls: u64,
    pub entries_per_append: Option<f64>,
    /// Entries appended per data sync (None when the node did not sync: `never`).
    pub entries_per_sync: Option<f64>,
    pub cpu_s: f64,
}

/// One configuration (policy x client count) of a run.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigResult {
    pub fsync: String,
    pub clients: u64,
    pub connections: u64,
    pub nodes: u64,
    pub value_bytes: u64,
    pub reads_pct: u8,
    pub duration_s: f64,
    /// Successful operations in the window.
    pub ops: u64,
    pub writes: u64,
    pub reads: u64,
    /// Failed or unknown-outcome operations in the window.
    pub errors: u64,
    pub first_error: Option<String>,
    pub ops_per_s: f64,
    /// Value bytes committed (writes) or read per second, 10^6 bytes.
    pub mb_per_s: f64,
    pub latency_us_p50: f64,
    pub latency_us_p90: f64,
    pub latency_us_p99: f64,
    pub latency_us_p999: f64,
    pub latency_us_max: f64,
    pub latency_us_mean: f64,
    /// CPU time of the node processes and the load generator per successful operation.
    pub cpu_us_per_op: f64,
    pub cpu_us_per_op_nodes: f64,
    pub cpu_us_per_op_load_generator: f64,
    /// Term at the start and the end of the window: a difference means elections happened.
    pub term_start: u64,
    pub term_end: u64,
    pub per_node: Vec<NodeFigures>,
    /// Raw fdatasync p50 measured right before this configuration (the disk's state changes
    /// during a long run; the run-wide figure is in `baselines`).
    pub fdatasync_us_p50_before: f64,
    /// `latency_us_p50 - fdatasync_us_p50_before`.
    pub latency_us_p50_minus_fdatasync_p50: f64,
    /// `latency_us_p50 / baselines.pipe_rtt_us_p50`.
    pub ratio_latency_p50_to_pipe_rtt_p50: f64,
    /// `mb_per_s / (baselines.memcpy_gb_per_s * 1000)`.
    pub ratio_mb_per_s_to_memcpy: f64,
}

/// The machine the run was on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpus: u64,
    pub memory_bytes: u64,
    pub kernel: String,
    pub cpu_model: String,
    /// Where the node data directories were (the disk the syncs go to).
    pub data_dir: String,
    /// The file system holding `data_dir`: "DEVICE TYPE" from /proc/mounts.
    pub data_fs: String,
    pub started_unix_s: u64,
}

/// The whole run, as written by `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub version: u32,
    pub command: String,
    pub machine: Machine,
    pub baselines: Baselines,
    pub results: Vec<ConfigResult>,
}

impl Machine {
    pub fn probe(data_dir: &Path) -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(String::new, |(_, v)| v.trim().to_string());
        let kernel = nix::sys::utsname::uname()
            .map(|u| {
                format!(
                    "{} {}",
                    u.sysname().to_string_lossy(),
                    u.release().to_string_lossy()
                )
            })
            .unwrap_or_default();
        // The mount with the longest mount point that prefixes the data directory.
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let data_fs = mounts
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3 && data_dir.starts_with(f[1])).then(|| (f[1].len(), f[0], f[2]))
            })
            .max_by_key(|m| m.0)
            .map_or_else(String::new, |(_, dev, ty)| format!("{dev} {ty}"));
        Machine {
            data_fs,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            memory_bytes,
            kernel,
            cpu_model,
            data_dir: data_dir.display().to_string(),
            started_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// The baselines as printed before the table.
pub fn baselines_text(b: &Baselines) -> String {
    format!(
        "baselines (same run): fdatasync p50 {:.1} us (p99 {:.1}; p50 {:.1} with idle CPUs), \
         pipe round trip p50 {:.1} us (p99 {:.1}), memcpy {:.2} GB/s\n",
        b.fdatasync_us_p50,
        b.fdatasync_us_p99,
        b.fdatasync_idle_us_p50,
        b.pipe_rtt_us_p50,
        b.pipe_rtt_us_p99,
        b.memcpy_gb_per_s
    )
}

/// The terminal table: one row per configuration, then per-node sync figures.
pub fn table(results: &[ConfigResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<12} {:>7} {:>11} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>6}",
        "fsync",
        "clients",
        "ops/s",
        "MB/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "cpu us/op",
        "syncs/s",
        "errors"
    );
    for r in results {
        let leader_syncs = r
            .per_node
            .iter()
            .find(|n| n.role == "leader")
            .map_or(0.0, |n| n.syncs_per_s);
        let _ = writeln!(
            s,
            "{:<12} {:>7} {:>11.0} {:>8.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.0} {:>8.1} {:>8.0} {:>6}",
            r.fsync,
            r.clients,
            r.ops_per_s,
            r.mb_per_s,
            r.latency_us_p50,
            r.latency_us_p90,
            r.latency_us_p99,
            r.latency_us_p999,
            r.latency_us_max,
            r.cpu_us_per_op,
            leader_syncs,
            r.errors
        );
    }
    let _ = writeln!(
        s,
        "\nper node: syncs/s x entries per sync, entries per append (batch), CPU us per op (L: leader)"
    );
    for r in results {
        let nodes: Vec<String> = r
            .per_node
            .iter()
            .map(|n| {
                format!(
                    "n{}{} {:.0}/s x {} batch {} cpu {:.1}",
                    n.id,
                    if n.role == "leader" { "(L)" } else { "" },
                    n.syncs_per_s,
                    n.entries_per_sync
                        .map_or_else(|| "-".to_string(), |e| format!("{e:.1}")),
                    n.entries_per_append
                        .map_or_else(|| "-".to_string(), |e| format!("{e:.1}")),
                    if r.ops > 0 {
                        n.cpu_s * 1e6 / r.ops as f64
                    } else {
                        0.0
                    }
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "{:<12} {:>7}  {}  load generator cpu {:.1}{}",
            r.fsync,
            r.clients,
            nodes.join("  "),
            r.cpu_us_per_op_load_generator,
            if r.term_end != r.term_start {
                format!("  (elections: term {} -> {})", r.term_start, r.term_end)
            } else {
                String::new()
            }
        );
    }
    s
}

/// Writes the plot: committed ops/s per client count (left) and latency p50 and p99 (right),
/// one color per fsync policy, both on log scales.
pub fn plot(path: &Path, results: &[ConfigResult], title: &str) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let e = |e: &dyn std::fmt::Display| anyhow!("writing the plot {}: {e}", path.display());
    let mut policies: Vec<&str> = Vec::new();
    for r in results {
        if !policies.contains(&r.fsync.as_str()) {
            policies.push(&r.fsync);
        }
    }
    let xs = results.iter().map(|r| r.clients as f64);
    let xmin = xs.clone().fold(f64::INFINITY, f64::min).max(1.0) * 0.8;
    let xmax = xs.fold(1.0, f64::max) * 1.25;
    let ops_max = results.iter().map(|r| r.ops_per_s).fold(1.0, f64::max) * 1.1;
    let lat_min = results
        .iter()
        .map(|r| r.latency_us_p50)
        .fold(f64::INFINITY, f64::min)
        .max(1.0)
        * 0.7;
    let lat_max = results
        .iter()
        .map(|r| r.latency_us_p99)
        .fold(10.0, f64::max)
        * 1.5;
    let palette = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
    ];
    // The two charts have different coordinate types, so these are macros, not functions.
    macro_rules! labelled_line {
        ($chart:expr, $pts:expr, $color:expr, $label:expr) => {{
            let color = $color;
            $chart
                .draw_series(LineSeries::new($pts.clone(), color.stroke_width(2)))
                .map_err(|x| e(&x))?
                .label($label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            $chart
                .draw_series($pts.iter().map(|&pt| Circle::new(pt, 3, color.filled())))
                .map_err(|x| e(&x))?;
        }};
    }
    macro_rules! legend {
        ($chart:expr) => {
            $chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|x| e(&x))?
        };
    }
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(|x| e(&x))?;
    let (left, right) = root.split_horizontally(600);

    let mut ops_chart = ChartBuilder::on(&left)
        .caption("committed operations per second", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((xmin..xmax).log_scale(), 0f64..ops_max)
        .map_err(|x| e(&x))?;
    ops_chart
        .configure_mesh()
        .x_desc("clients (requests in flight)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("ops/s")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()
        .map_err(|x| e(&x))?;
    let mut lat_chart = ChartBuilder::on(&right)
        .caption("latency p50 (solid) and p99 (thin), us", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((xmin..xmax).log_scale(), (lat_min..lat_max).log_scale())
        .map_err(|x| e(&x))?;
    lat_chart
        .configure_mesh()
        .x_desc("clients (requests in flight)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("us")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|x| e(&x))?;
    for (k, p) in policies.iter().enumerate() {
        let color = palette[k % palette.len()];
        let mut rows: Vec<&ConfigResult> = results.iter().filter(|r| r.fsync == *p).collect();
        rows.sort_by_key(|r| r.clients);
        let ops: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.clients as f64, r.ops_per_s))
            .collect();
        labelled_line!(ops_chart, ops, color, *p);
        let p50: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.clients as f64, r.latency_us_p50.max(1.0)))
            .collect();
        let p99: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.clients as f64, r.latency_us_p99.max(1.0)))
            .collect();
        labelled_line!(lat_chart, p50, color, *p);
        lat_chart
            .draw_series(LineSeries::new(p99.clone(), color.stroke_width(1)))
            .map_err(|x| e(&x))?;
        lat_chart
            .draw_series(p99.iter().map(|&pt| TriangleMarker::new(pt, 3, color)))
            .map_err(|x| e(&x))?;
    }
    legend!(ops_chart);
    legend!(lat_chart);
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
