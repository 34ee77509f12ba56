//! Renders a sample confusion matrix and PR curves to look at:
//! `cargo run -p fieldkit-core --example render_plots -- OUT_DIR`.
use fieldkit_core::report;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "runs/plots".into()));
    let labels: Vec<String> = [
        "carpet_weed",
        "crabgrass",
        "eclipta",
        "goosegrass",
        "morning_glory",
        "nutsedge",
        "palmer_amaranth",
        "prickly_sida",
        "purslane",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let n = labels.len();
    let cm: Vec<Vec<u64>> = (0..n)
        .map(|t| (0..n).map(|p| if t == p { 30 + 7 * t as u64 } else { ((t * 3 + p * 5) % 7) as u64 }).collect())
        .collect();
    report::plot_confusion(&out.join("confusion.png"), &cm, &labels, "confusion matrix (valid)")?;
    let curves: Vec<(String, Vec<f64>)> = vec![
        ("crop".into(), (0..101).map(|i| (1.0 - (i as f64 / 100.0).powi(3)).max(0.0)).collect()),
        ("weed".into(), (0..101).map(|i| (1.0 - (i as f64 / 100.0).powi(2)) * 0.9).collect()),
    ];
    report::plot_pr_curves(&out.join("pr.png"), "precision-recall @ IoU 0.5", &curves)?;
    println!("wrote {}", out.display());
    Ok(())
}
