//! The throughput-against-concurrency chart of BENCHMARKS.md, as a PNG.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

/// One line of the chart: (workflows, durable steps per second) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(usize, f64)>,
    pub color: RGBColor,
}

/// Draws `series` on log-log axes into `path`.
pub fn draw(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let max_x = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).max().unwrap_or(1).max(2) as f64;
    let max_y = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0, f64::max);
    let min_y = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(max_y, f64::min);
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((0.8..max_x * 1.25).log_scale(), (min_y / 2.0..max_y * 2.0).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("concurrent workflows (100 no-op steps each)")
        .y_desc("durable steps per second")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for line in series {
        let points: Vec<(f64, f64)> = line.points.iter().map(|&(x, y)| (x as f64, y)).collect();
        let color = line.color;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
            .map_err(|e| anyhow!("{e}"))?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
        chart
            .draw_series(points.into_iter().map(|point| Circle::new(point, 5, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
