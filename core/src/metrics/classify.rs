//! Classification metrics with sklearn's conventions (`zero_division=0`, macro averages over
//! every listed class, including classes absent from the split).

use serde::Serialize;

use crate::error::{CoreError, Result};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMetrics {
    pub name: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassificationReport {
    pub num_samples: usize,
    pub top1: f64,
    /// Only when scores were given; k = min(5, number of classes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top5: Option<f64>,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub weighted_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

impl ClassificationReport {
    /// `scores[i]` (optional) holds per-class scores of sample `i` for top-k accuracy.
    pub fn compute(
        y_true: &[usize],
        y_pred: &[usize],
        scores: Option<&[Vec<f32>]>,
        classes: &[String],
    ) -> Result<Self> {
        let n = classes.len();
        if y_true.len() != y_pred.len() {
            return Err(CoreError::Argument(format!("{} labels but {} predictions", y_true.len(), y_pred.len())));
        }
        if y_true.is_empty() {
            return Err(CoreError::Argument("no samples to evaluate".into()));
        }
        if let Some(bad) = y_true.iter().chain(y_pred).find(|&&c| c >= n) {
            return Err(CoreError::Argument(format!("class index {bad} out of range for {n} classes")));
        }
        let mut confusion = vec![vec![0u64; n]; n];
        for (&t, &p) in y_true.iter().zip(y_pred) {
            confusion[t][p] += 1;
        }
        let total = y_true.len() as f64;
        let correct: u64 = (0..n).map(|i| confusion[i][i]).sum();
        let mut per_class = Vec::with_capacity(n);
        for (k, name) in classes.iter().enumerate() {
            let tp = confusion[k][k] as f64;
            let predicted: u64 = (0..n).map(|i| confusion[i][k]).sum();
            let support: u64 = confusion[k].iter().sum();
            let precision = ratio(tp, predicted as f64);
            let recall = ratio(tp, support as f64);
            let f1 = ratio(2.0 * precision * recall, precision + recall);
            per_class.push(ClassMetrics { name: name.clone(), precision, recall, f1, support: support as usize });
        }
        let mean = |f: fn(&ClassMetrics) -> f64| per_class.iter().map(f).sum::<f64>() / n as f64;
        let weighted_f1 = per_class.iter().map(|c| c.f1 * c.support as f64).sum::<f64>() / total;
        let top5 = match scores {
            None => None,
            Some(s) => Some(top_k_accuracy(y_true, s, 5.min(n), n)?),
        };
        Ok(ClassificationReport {
            num_samples: y_true.len(),
            top1: correct as f64 / total,
            top5,
            macro_precision: mean(|c| c.precision),
            macro_recall: mean(|c| c.recall),
            macro_f1: mean(|c| c.f1),
            weighted_f1,
            per_class,
            confusion,
        })
    }

    /// A plain-text table for the terminal.
    pub fn table(&self) -> String {
        let width = self.per_class.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
        let mut s = format!("{:width$}  precision  recall     f1  support\n", "class");
        for c in &self.per_class {
            s += &format!(
                "{:width$}  {:>9.4}  {:>6.4}  {:>5.4}  {:>7}\n",
                c.name, c.precision, c.recall, c.f1, c.support
            );
        }
        s += &format!("top-1 {:.4}", self.top1);
        if let Some(t5) = self.top5 {
            s += &format!("  top-5 {t5:.4}");
        }
        s += &format!(
            "  macro-F1 {:.4}  weighted-F1 {:.4}  ({} samples)\n",
            self.macro_f1, self.weighted_f1, self.num_samples
        );
        s
    }
}

/// Share of samples whose true class is among the `k` highest scores (ties resolved in
/// favour of the lower class index, like a stable descending sort).
pub fn top_k_accuracy(y_true: &[usize], scores: &[Vec<f32>], k: usize, n: usize) -> Result<f64> {
    if scores.len() != y_true.len() {
        return Err(CoreError::Argument(format!("{} labels but {} score rows", y_true.len(), scores.len())));
    }
    let mut hits = 0usize;
    for (i, (&t, row)) in y_true.iter().zip(scores).enumerate() {
        if row.len() != n {
            return Err(CoreError::Argument(format!("score row {i} has {} values, expected {n}", row.len())));
        }
        let better = row.iter().enumerate().filter(|&(j, &s)| s > row[t] || (s == row[t] && j < t)).count();
        if better < k {
            hits += 1;
        }
    }
    Ok(hits as f64 / y_true.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let t = [0, 0, 1, 1, 2, 2];
        let p = [0, 1, 1, 1, 0, 2];
        let r = ClassificationReport::compute(&t, &p, None, &classes).unwrap();
        assert!((r.top1 - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(r.confusion, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]);
        // a: p 1/2 r 1/2 f 1/2; b: p 2/3 r 1 f 0.8; c: p 1 r 1/2 f 2/3
        assert!((r.macro_f1 - (0.5 + 0.8 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert!(ClassificationReport::compute(&[0], &[3], None, &classes).is_err());
    }

    #[test]
    fn absent_class_counts_as_zero_in_macro() {
        let classes: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let r = ClassificationReport::compute(&[0, 0], &[0, 0], None, &classes).unwrap();
        assert_eq!(r.macro_f1, 0.5);
    }

    #[test]
    fn top_k() {
        let s = vec![vec![0.1, 0.5, 0.4], vec![0.9, 0.05, 0.05]];
        assert_eq!(top_k_accuracy(&[2, 2], &s, 1, 3).unwrap(), 0.0);
        assert_eq!(top_k_accuracy(&[2, 2], &s, 2, 3).unwrap(), 0.5);
    }
}
