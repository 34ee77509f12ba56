//! Segmentation metrics over a whole split: one pixel confusion matrix summed over every image
//! (what torchvision's segmentation reference, mmsegmentation and torchmetrics' `MeanIoU`
//! accumulate), then per-class IoU and Dice, pixel accuracy and mean IoU. Checked against
//! scikit-learn's confusion matrix, `jaccard_score` and `f1_score` on flattened pixels through
//! `core/tests/golden/segment/`.
//!
//! A class with no pixel in the truth and none predicted has no IoU or Dice (`null`), and is
//! left out of the means rather than counted as 0 or 1: a split without weeds says nothing
//! about weeds. Truth pixels equal to `ignore` (e.g. 255, a "don't care" border) count nowhere.

use serde::Serialize;

use crate::error::{CoreError, Result};

/// Pixel counts, `counts[truth * classes + predicted]`, accumulated image by image.
#[derive(Debug, Clone, PartialEq)]
pub struct SegConfusion {
    classes: usize,
    ignore: Option<u8>,
    counts: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegClassMetrics {
    pub name: String,
    /// TP / (TP + FP + FN); `None` when the class is neither in the truth nor predicted.
    pub iou: Option<f64>,
    /// 2·TP / (2·TP + FP + FN), the F1 score of the class's pixels.
    pub dice: Option<f64>,
    /// Truth pixels of the class, and pixels predicted as it.
    pub pixels: u64,
    pub predicted: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentationReport {
    /// Mean IoU over the classes that have one.
    pub miou: f64,
    /// Mean Dice over the same classes.
    pub mean_dice: f64,
    /// Pixels predicted right over pixels counted (ignored pixels left out).
    pub pixel_acc: f64,
    /// Pixels counted.
    pub pixels: u64,
    pub per_class: Vec<SegClassMetrics>,
    /// `confusion[truth][predicted]`, in pixels.
    pub confusion: Vec<Vec<u64>>,
}

impl SegConfusion {
    /// An empty matrix over `classes` class ids (0..classes); truth pixels equal to `ignore`
    /// are skipped.
    pub fn new(classes: usize, ignore: Option<u8>) -> Self {
        SegConfusion { classes, ignore, counts: vec![0; classes * classes] }
    }

    /// Adds one image's class maps (row-major, the same size). A truth or predicted id outside
    /// the classes is an error naming it and its pixel, not a silent miscount.
    pub fn add(&mut self, truth: &[u8], predicted: &[u8]) -> Result<()> {
        if truth.len() != predicted.len() {
            return Err(CoreError::Argument(format!(
                "class maps of {} and {} pixels: truth and prediction must be the same size",
                truth.len(),
                predicted.len()
            )));
        }
        let n = self.classes;
        let counted = |&(_, (&t, _)): &(usize, (&u8, &u8))| Some(t) != self.ignore;
        // Checked before anything is counted, so a failed image leaves the matrix as it was.
        if let Some((i, (&t, &p))) = truth
            .iter()
            .zip(predicted)
            .enumerate()
            .filter(counted)
            .find(|(_, (&t, &p))| t as usize >= n || p as usize >= n)
        {
            let (what, id) = if t as usize >= n { ("truth", t) } else { ("prediction", p) };
            return Err(CoreError::Argument(format!(
                "{what} class id {id} at pixel {i} is outside the {n} classes (0..{})",
                n - 1
            )));
        }
        for (_, (&t, &p)) in truth.iter().zip(predicted).enumerate().filter(counted) {
            self.counts[t as usize * n + p as usize] += 1;
        }
        Ok(())
    }

    /// Adds another matrix of the same classes (per-worker partial sums).
    pub fn merge(&mut self, other: &SegConfusion) -> Result<()> {
        if other.classes != self.classes {
            return Err(CoreError::Argument(format!(
                "confusion matrices of {} and {} classes",
                self.classes, other.classes
            )));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        Ok(())
    }

    /// The metrics, classes named by `names` (one per class id).
    pub fn report(&self, names: &[String]) -> Result<SegmentationReport> {
        let n = self.classes;
        if names.len() != n {
            return Err(CoreError::Argument(format!("{} class names for {n} classes", names.len())));
        }
        let at = |t: usize, p: usize| self.counts[t * n + p];
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return Err(CoreError::Argument("no pixels to evaluate (every truth pixel ignored?)".into()));
        }
        let correct: u64 = (0..n).map(|k| at(k, k)).sum();
        let per_class: Vec<SegClassMetrics> = names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let tp = at(k, k);
                let pixels: u64 = (0..n).map(|p| at(k, p)).sum();
                let predicted: u64 = (0..n).map(|t| at(t, k)).sum();
                let union = pixels + predicted - tp;
                let (iou, dice) = if union == 0 {
                    (None, None)
                } else {
                    (Some(tp as f64 / union as f64), Some(2.0 * tp as f64 / (pixels + predicted) as f64))
                };
                SegClassMetrics { name: name.clone(), iou, dice, pixels, predicted }
            })
            .collect();
        let mean = |f: fn(&SegClassMetrics) -> Option<f64>| {
            let v: Vec<f64> = per_class.iter().filter_map(f).collect();
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        Ok(SegmentationReport {
            miou: mean(|c| c.iou),
            mean_dice: mean(|c| c.dice),
            pixel_acc: correct as f64 / total as f64,
            pixels: total,
            confusion: (0..n).map(|t| (0..n).map(|p| at(t, p)).collect()).collect(),
            per_class,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|k| format!("c{k}")).collect()
    }

    /// Worked by hand: 8 pixels, 3 classes, class 2 absent from both maps, one ignored pixel.
    #[test]
    fn a_small_case_by_hand() {
        let mut m = SegConfusion::new(3, Some(255));
        m.add(&[0, 0, 0, 1, 1, 1, 255, 0], &[0, 0, 1, 1, 1, 0, 2, 0]).unwrap();
        let r = m.report(&names(3)).unwrap();
        // class 0: tp 3, truth 4, predicted 4 -> IoU 3/5, Dice 6/8; class 1: tp 2, truth 3,
        // predicted 3 -> IoU 2/4, Dice 4/6; class 2: the ignored pixel's prediction does not count.
        assert_eq!(r.pixels, 7);
        assert_eq!(r.confusion, vec![vec![3, 1, 0], vec![1, 2, 0], vec![0, 0, 0]]);
        assert_eq!(r.per_class[0].iou, Some(0.6));
        assert_eq!(r.per_class[1].iou, Some(0.5));
        assert_eq!(r.per_class[2].iou, None);
        assert!((r.miou - 0.55).abs() < 1e-12);
        assert!((r.per_class[1].dice.unwrap() - 4.0 / 6.0).abs() < 1e-12);
        assert!((r.pixel_acc - 5.0 / 7.0).abs() < 1e-12);
        // Two halves merged equal the whole.
        let (mut a, mut b) = (SegConfusion::new(3, Some(255)), SegConfusion::new(3, Some(255)));
        a.add(&[0, 0, 0, 1], &[0, 0, 1, 1]).unwrap();
        b.add(&[1, 1, 255, 0], &[1, 0, 2, 0]).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a, m);
    }

    #[test]
    fn bad_ids_and_sizes_are_named() {
        let mut m = SegConfusion::new(3, None);
        let e = m.add(&[0, 1, 7], &[0, 1, 2]).unwrap_err().to_string();
        assert!(e.contains("truth class id 7 at pixel 2 is outside the 3 classes"), "{e}");
        let e = m.add(&[0, 1], &[0, 3]).unwrap_err().to_string();
        assert!(e.contains("prediction class id 3 at pixel 1"), "{e}");
        assert!(m.add(&[0], &[0, 1]).unwrap_err().to_string().contains("the same size"));
        assert!(SegConfusion::new(2, None).report(&names(2)).is_err(), "no pixels");
    }
}
