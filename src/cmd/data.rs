use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use fieldkit_core::dataset::check::{self, DataReport, Severity};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Count images and labels per split and class, and list every problem found.
    /// Exits 1 when there is an error (or a warning, with --strict).
    Check {
        /// data.yaml (YOLO), a COCO instances .json, an ImageFolder root, or a segmentation
        /// dataset: a mask folder (classes.csv) or a COCO folder (<split>/_annotations.coco.json
        /// or annotations/instances_<split>.json).
        #[arg(long)]
        data: PathBuf,
        /// Read --data as segmentation data: a data.yaml's labels as YOLO-seg polygons, each
        /// image's mask built as training builds it (pixel counts per class).
        #[arg(long)]
        segment: bool,
        /// Images folder of a COCO .json (default: the folder holding the .json).
        #[arg(long)]
        images: Option<PathBuf>,
        /// Write the full report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Treat warnings (missing labels, duplicates across splits, ...) as errors.
        #[arg(long)]
        strict: bool,
        /// Print at most this many warnings (all errors are always printed).
        #[arg(long, default_value_t = 20)]
        max_warnings: usize,
    },
}

pub fn run(cmd: DataCommand) -> Result<i32> {
    match cmd {
        DataCommand::Check { data, segment, images, json, strict, max_warnings } => {
            let report = match (&images, data.extension().and_then(|e| e.to_str())) {
                (Some(_), _) if segment => anyhow::bail!("--images is for a COCO .json of boxes, not with --segment"),
                (None, _) if segment => check::check_masks(&data)?,
                (Some(dir), Some("json")) => check::check_coco(&data, dir)?,
                (Some(_), _) => anyhow::bail!("--images is only for a COCO .json dataset"),
                _ => check::check(&data)?,
            };
            print!("{}", render(&report, max_warnings));
            if let Some(path) = json {
                fieldkit_core::fsio::write_json(&path, &report)?;
                println!("report written to {}", path.display());
            }
            let fail = report.has_errors() || (strict && report.warnings > 0);
            Ok(if fail { 1 } else { 0 })
        }
    }
}

/// Human-readable report: per-split counts table, size histogram, problems.
pub fn render(r: &DataReport, max_warnings: usize) -> String {
    let mut s = format!("dataset: {} ({})\n", r.source.display(), r.format);
    s += &format!("classes ({}): {}\n\n", r.classes.len(), r.classes.join(", "));
    let detection = r.splits.iter().any(|sp| sp.background_images.is_some());
    let unit = match r.format {
        "masks" | "yolo-seg" | "coco-seg" => "pixels",
        _ if detection => "boxes",
        _ => "images",
    };
    let header = format!("{unit} per class");
    let cw = r.classes.iter().map(|c| c.len()).max().unwrap_or(5).max(header.len());
    s += &format!("{header:cw$}");
    for sp in &r.splits {
        s += &format!(" {:>9}", sp.name);
    }
    s += "\n";
    for c in &r.classes {
        s += &format!("{c:cw$}");
        for sp in &r.splits {
            s += &format!(" {:>9}", sp.class_counts.get(c).copied().unwrap_or(0));
        }
        s += "\n";
    }
    s += &format!("{:cw$}", "images");
    for sp in &r.splits {
        s += &format!(" {:>9}", sp.images);
    }
    s += "\n";
    if detection {
        s += &format!("{:cw$}", "no objects");
        for sp in &r.splits {
            s += &format!(" {:>9}", sp.background_images.unwrap_or(0));
        }
        s += "\n";
    }
    s += "\nimage sizes:\n";
    for sp in &r.splits {
        let mut sizes: Vec<_> = sp.image_sizes.iter().collect();
        sizes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let shown: Vec<String> = sizes.iter().take(6).map(|(k, v)| format!("{k} ×{v}")).collect();
        let more = if sizes.len() > 6 { format!(", … {} more sizes", sizes.len() - 6) } else { String::new() };
        s += &format!("  {:>9}: {}{more}\n", sp.name, shown.join(", "));
    }
    s += &format!("\nproblems: {} errors, {} warnings\n", r.errors, r.warnings);
    let mut warnings_shown = 0;
    for p in &r.problems {
        if p.severity == Severity::Warning {
            if warnings_shown == max_warnings {
                continue;
            }
            warnings_shown += 1;
        }
        s += &format!("  {p}\n");
    }
    if r.warnings > warnings_shown {
        s += &format!("  … {} more warnings (see --json)\n", r.warnings - warnings_shown);
    }
    s
}
