//! Report output shared by every stage: CSV, JSON and PNG plots (confusion matrix heat map,
//! precision-recall curves, line charts for training curves), all written atomically.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{CoreError, Result};
use crate::fsio;

pub use crate::fsio::write_json;

// DejaVu Sans Mono cut to Latin (ASCII, Latin-1, Latin Extended-A) and a few symbols: 26 kB
// instead of 343 kB in every binary (scripts/subset-font.py; renamed as the Vera licence asks).
static FONT: &[u8] = include_bytes!("../assets/fonts/FieldkitMono.ttf");
static REGISTER: Once = Once::new();

fn ensure_font() {
    REGISTER.call_once(|| {
        // The bundled font is known-good; failure here would be a build defect.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Writes a CSV file with a header row.
pub fn write_csv(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| CoreError::invalid(path, format!("cannot write CSV: {e}"));
    w.write_record(header).map_err(csv_err)?;
    for (i, r) in rows.iter().enumerate() {
        if r.len() != header.len() {
            return Err(CoreError::invalid(
                path,
                format!("row {i} has {} fields, header has {}", r.len(), header.len()),
            ));
        }
        w.write_record(r).map_err(csv_err)?;
    }
    let bytes = w.into_inner().map_err(|e| CoreError::invalid(path, format!("cannot write CSV: {e}")))?;
    fsio::write_atomic(path, &bytes)
}

/// Renders into an RGB buffer, then encodes and writes the PNG atomically.
fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend, plotters::coord::Shift>) -> std::result::Result<(), String>,
) -> Result<()> {
    ensure_font();
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| CoreError::invalid(path, format!("plot: {e}")))?;
        draw(root.clone()).map_err(|e| CoreError::invalid(path, format!("plot: {e}")))?;
        root.present().map_err(|e| CoreError::invalid(path, format!("plot: {e}")))?;
    }
    let img = image::RgbImage::from_raw(size.0, size.1, buf).expect("buffer sized for the image");
    crate::image_io::save_png(path, &img)
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Confusion matrix heat map: colour is the row-normalised rate (recall per true class),
/// the cell text the raw count. Rows are labelled "i name", columns by index i, so long
/// class names need no rotated text.
pub fn plot_confusion(path: &Path, matrix: &[Vec<u64>], labels: &[String], title: &str) -> Result<()> {
    let n = labels.len();
    if n == 0 || matrix.len() != n || matrix.iter().any(|r| r.len() != n) {
        return Err(CoreError::Argument(format!("confusion matrix is not {n}x{n}")));
    }
    let cell = (560 / n as u32).clamp(24, 72);
    let row_label_w = (labels.iter().map(|l| l.len()).max().unwrap_or(4) as u32 + 4) * 8 + 16;
    let (left, top) = (row_label_w + 24, 64u32);
    let size = (left + cell * n as u32 + 20, top + cell * n as u32 + 50);
    render_png(path, size, |root| {
        let centre = |x: u32, y: u32| (x as i32, y as i32);
        let font = |px: u32| ("sans-serif", px).into_font();
        let centred = Pos::new(HPos::Center, VPos::Center);
        root.draw(&Text::new(title.to_string(), centre(size.0 / 2, 18), font(18).color(&BLACK).pos(centred)))
            .map_err(s)?;
        root.draw(&Text::new("predicted", centre(left + cell * n as u32 / 2, 38), font(13).color(&BLACK).pos(centred)))
            .map_err(s)?;
        root.draw(&Text::new("true", centre(24, top + cell * n as u32 / 2), font(13).color(&BLACK).pos(centred)))
            .map_err(s)?;
        let count_px = (cell / 3).clamp(10, 16);
        for (t, row) in matrix.iter().enumerate() {
            let total: u64 = row.iter().sum();
            let y = top + t as u32 * cell;
            let label = format!("{t} {}", labels[t]);
            root.draw(&Text::new(
                label,
                (left as i32 - 8, (y + cell / 2) as i32),
                font(12).color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(s)?;
            for (p, &c) in row.iter().enumerate() {
                let rate = if total == 0 { 0.0 } else { c as f64 / total as f64 };
                let x = left + p as u32 * cell;
                let shade = (255.0 * (1.0 - rate)) as u8;
                let fill = RGBColor(shade, shade, 255);
                root.draw(&Rectangle::new([centre(x, y), centre(x + cell, y + cell)], fill.filled())).map_err(s)?;
                root.draw(&Rectangle::new([centre(x, y), centre(x + cell, y + cell)], RGBColor(200, 200, 200)))
                    .map_err(s)?;
                let color = if rate > 0.5 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    c.to_string(),
                    centre(x + cell / 2, y + cell / 2),
                    font(count_px).color(&color).pos(centred),
                ))
                .map_err(s)?;
            }
        }
        for p in 0..n {
            let x = left + p as u32 * cell + cell / 2;
            root.draw(&Text::new(p.to_string(), centre(x, top - 10), font(12).color(&BLACK).pos(centred)))
                .map_err(s)?;
        }
        Ok(())
    })
}

/// Tints each pixel of an image by its class (`ids`, row-major, the image's size) with the
/// boxes' palette, half and half; class 0 (background) is left as it is.
pub fn overlay_classes(img: &mut image::RgbImage, ids: &[u8]) -> Result<()> {
    let (w, h) = img.dimensions();
    if ids.len() != (w * h) as usize {
        return Err(CoreError::Argument(format!("overlay: {} class ids for a {w}x{h} image", ids.len())));
    }
    for (p, &c) in img.pixels_mut().zip(ids) {
        if c == 0 {
            continue;
        }
        let t = Palette99::pick(c as usize).to_rgba();
        for (v, tint) in p.0.iter_mut().zip([t.0, t.1, t.2]) {
            *v = ((*v as u16 + tint as u16) / 2) as u8;
        }
    }
    Ok(())
}

/// Draws labelled boxes (`[x1, y1, x2, y2]` in pixels) onto an image in place; `color` picks
/// from a fixed palette so a class keeps its colour across images.
pub fn annotate(img: &mut image::RgbImage, boxes: &[([f32; 4], String, usize)]) -> Result<()> {
    ensure_font();
    let (w, h) = img.dimensions();
    let thick = ((w.min(h) as f32 / 250.0).round() as i32).max(1);
    let font_px = ((w.min(h) as f32 / 30.0) as u32).clamp(11, 28);
    let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
    let draw_err = |e: &dyn std::fmt::Display| CoreError::Argument(format!("annotate: {e}"));
    for (b, label, color) in boxes {
        let c = Palette99::pick(*color).to_rgba();
        let (x1, y1, x2, y2) = (b[0] as i32, b[1] as i32, b[2] as i32, b[3] as i32);
        for t in 0..thick {
            root.draw(&Rectangle::new([(x1 + t, y1 + t), (x2 - t, y2 - t)], c.stroke_width(1)))
                .map_err(|e| draw_err(&e))?;
        }
        // Dark text on light palette colours, white on dark ones.
        let luma = 0.299 * c.0 as f32 + 0.587 * c.1 as f32 + 0.114 * c.2 as f32;
        let style = ("sans-serif", font_px).into_font().color(if luma > 150.0 { &BLACK } else { &WHITE });
        let (tw, th) = root.estimate_text_size(label, &style).map_err(|e| draw_err(&e))?;
        let (text_w, text_h) = (tw as i32 + 6, th as i32 + 4);
        let ty = if y1 - text_h >= 0 { y1 - text_h } else { y1 };
        root.draw(&Rectangle::new([(x1, ty), (x1 + text_w, ty + text_h)], c.filled())).map_err(|e| draw_err(&e))?;
        root.draw(&Text::new(label.clone(), (x1 + 3, ty + 2), style)).map_err(|e| draw_err(&e))?;
    }
    root.present().map_err(|e| draw_err(&e))?;
    Ok(())
}

/// A named polyline to draw over a frame: a counting line (open) or a zone (`closed`).
#[derive(Debug, Clone, PartialEq)]
pub struct Outline {
    pub points: Vec<(i32, i32)>,
    pub closed: bool,
    pub label: String,
}

/// Draws outlines onto an image in place, in white with a dark border, so they read on grass
/// and on soil.
pub fn draw_paths(img: &mut image::RgbImage, paths: &[Outline]) -> Result<()> {
    ensure_font();
    let (w, h) = img.dimensions();
    let thick = ((w.min(h) as f32 / 300.0).round() as u32).max(1);
    let font_px = ((w.min(h) as f32 / 32.0) as u32).clamp(11, 26);
    let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
    let draw_err = |e: &dyn std::fmt::Display| CoreError::Argument(format!("draw_paths: {e}"));
    for Outline { points, closed, label } in paths {
        let mut pts = points.clone();
        if *closed && pts.len() > 2 {
            pts.push(pts[0]);
        }
        for (color, width) in [(BLACK, thick + 2), (WHITE, thick)] {
            root.draw(&PathElement::new(pts.clone(), color.stroke_width(width))).map_err(|e| draw_err(&e))?;
        }
        if let Some(&(x, y)) = points.first() {
            let style = ("sans-serif", font_px).into_font().color(&WHITE);
            root.draw(&Text::new(label.clone(), (x + 4, y + 4), style)).map_err(|e| draw_err(&e))?;
        }
    }
    root.present().map_err(|e| draw_err(&e))?;
    Ok(())
}

/// One line per series; `points` are (x, y).
pub fn plot_lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let pts = series.iter().flat_map(|(_, p)| p.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(CoreError::Argument(format!("{title}: nothing to plot")));
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    render_png(path, (800, 500), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(s)?;
        chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).label_style(("sans-serif", 12)).draw().map_err(s)?;
        for (i, (name, p)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    p.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()),
                    color.stroke_width(2),
                ))
                .map_err(s)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(s)?;
        Ok(())
    })
}

/// Vertical bars in the given order, one per `(label, value, highlighted)`; highlighted bars
/// are drawn in a second colour (e.g. layers kept in float).
pub fn plot_bars(path: &Path, title: &str, y_desc: &str, bars: &[(String, f64, bool)]) -> Result<()> {
    let finite: Vec<f64> = bars.iter().map(|b| b.1).filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return Err(CoreError::Argument(format!("{title}: nothing to plot")));
    }
    let top = finite.iter().copied().fold(f64::MIN, f64::max).max(0.0) * 1.05 + 1e-9;
    let bottom = finite.iter().copied().fold(f64::MAX, f64::min).min(0.0);
    let n = bars.len();
    let width = (40 + 14 * n as u32).clamp(640, 2400);
    render_png(path, (width, 480), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, bottom..top)
            .map_err(s)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("layer (graph order)")
            .y_desc(y_desc)
            .x_label_formatter(&|x| format!("{}", *x as usize))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(s)?;
        let (normal, marked) = (Palette99::pick(0).to_rgba(), Palette99::pick(1).to_rgba());
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v, hl))| {
                let v = if v.is_finite() { *v } else { top };
                let color = if *hl { marked } else { normal };
                Rectangle::new([(i as f64 + 0.1, 0.0), (i as f64 + 0.9, v)], color.filled())
            }))
            .map_err(s)?;
        Ok(())
    })
}

/// Precision-recall curves from precision sampled at evenly spaced recall points
/// (COCO's 101), one per class; classes whose curve is undefined (-1) are skipped.
pub fn plot_pr_curves(path: &Path, title: &str, curves: &[(String, Vec<f64>)]) -> Result<()> {
    let series: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .filter(|(_, p)| p.iter().all(|&v| v >= 0.0) && p.len() > 1)
        .map(|(name, p)| {
            let n = (p.len() - 1) as f64;
            (name.clone(), p.iter().enumerate().map(|(i, &v)| (i as f64 / n, v)).collect())
        })
        .collect();
    if series.is_empty() {
        return Err(CoreError::Argument(format!("{title}: no class has a defined PR curve")));
    }
    plot_lines(path, title, "recall", "precision", &series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_plots_are_written() {
        let d = tempfile::tempdir().unwrap();
        write_csv(&d.path().join("m.csv"), &["epoch", "loss"], &[vec!["1".into(), "0.5".into()]]).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("m.csv")).unwrap(), "epoch,loss\n1,0.5\n");
        assert!(write_csv(&d.path().join("bad.csv"), &["a"], &[vec![]]).is_err());

        let labels: Vec<String> = vec!["crop".into(), "weed".into(), "soil".into()];
        let cm = vec![vec![5, 1, 0], vec![2, 7, 1], vec![0, 0, 3]];
        let p = d.path().join("cm.png");
        plot_confusion(&p, &cm, &labels, "confusion").unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // Some pixels are the saturated blue of a high-recall cell, some dark text.
        assert!(img.pixels().any(|px| px.0[2] == 255 && px.0[0] < 100));
        assert!(img.pixels().any(|px| px.0 == [0, 0, 0]));

        let mut img = image::RgbImage::from_pixel(120, 80, image::Rgb([0, 0, 0]));
        annotate(&mut img, &[([10.0, 20.0, 60.0, 70.0], "weed 0.91".into(), 1)]).unwrap();
        assert_ne!(img.get_pixel(10, 45).0, [0, 0, 0], "box edge drawn");
        assert_eq!(img.get_pixel(35, 60).0, [0, 0, 0], "box inside left untouched");

        let curves = vec![("weed".to_string(), (0..101).map(|i| 1.0 - i as f64 / 200.0).collect())];
        plot_pr_curves(&d.path().join("pr.png"), "PR", &curves).unwrap();
        assert!(plot_pr_curves(&d.path().join("none.png"), "PR", &[("x".into(), vec![-1.0; 101])]).is_err());
    }
}
