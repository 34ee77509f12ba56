//! Batches for one epoch produced ahead of the training step on background threads, in a
//! fixed order: batch `b` is always built by worker `b % workers` from the same seeded
//! draws, so runs are reproducible and a resumed epoch can skip straight to its batch.

use std::sync::mpsc::{sync_channel, Receiver};

use fieldkit_core::preprocess::Preprocess;

use super::mix::Mixed;
use super::{sample_rng, Augment, ImageSet};
use crate::error::{Result, TrainerError};

/// `[n, 3, size, size]` normalised pixels and their labels.
#[derive(Debug, Clone)]
pub struct Batch {
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
    pub n: usize,
    /// Set when `--mix` mixed this batch: the partners' labels and the weight of the own.
    pub mix: Option<Mixed>,
}

/// Batch boundaries over `order`: full batches, plus the remainder unless it is a single
/// sample (training BatchNorm cannot normalise a batch of one).
pub fn batch_ranges(len: usize, batch: usize, training: bool) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < len {
        let end = (start + batch).min(len);
        if training && end - start < 2 && !out.is_empty() {
            break;
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// Keys the batch-mixing random stream apart from the per-view augmentation streams.
const MIX_SALT: u64 = 0x6d69_785f_6261_7463;

/// Builds one batch: augmented views (when `augment` is given) of `indices`, normalised
/// with the card's spec.
pub fn build_batch(
    set: &ImageSet,
    indices: &[usize],
    size: u32,
    augment: Option<&Augment>,
    preprocess: &Preprocess,
    seed: u64,
    epoch: usize,
) -> Result<Batch> {
    let plane = 3 * (size * size) as usize;
    let mut pixels = vec![0.0f32; indices.len() * plane];
    let mut labels = Vec::with_capacity(indices.len());
    for (k, &i) in indices.iter().enumerate() {
        let img = match augment {
            Some(a) => a.apply(&set.images[i], size, &mut sample_rng(seed, epoch, i))?,
            None => set.images[i].clone(),
        };
        if img.dimensions() != (size, size) {
            return Err(TrainerError::Config(format!(
                "{}: prepared image is {:?}, the model takes {size}x{size}",
                set.paths[i].display(),
                img.dimensions()
            )));
        }
        preprocess.normalize_into(&img, &mut pixels[k * plane..(k + 1) * plane])?;
        labels.push(set.labels[i] as i64);
    }
    // One draw per batch, from a stream no view uses (keyed by the batch's first sample).
    let mix = match (augment.and_then(|a| a.mix), indices.first()) {
        (Some(m), Some(&first)) => {
            m.apply(&mut pixels, &labels, size as usize, &mut sample_rng(seed ^ MIX_SALT, epoch, first))
        }
        _ => None,
    };
    Ok(Batch { pixels, labels, n: indices.len(), mix })
}

/// Produces the batches of one training epoch on `workers` threads, at most two batches
/// ahead per worker. Dropping the loader stops the workers. Generic over what a batch is
/// (classification images, detection images with boxes).
pub struct EpochLoader<T = Batch> {
    receivers: Vec<Receiver<Result<T>>>,
    next: usize,
    end: usize,
    handles: Vec<std::thread::JoinHandle<()>>,
}

/// Builds batch `b` of an epoch; called from the loader threads.
pub type BuildBatch<T> = std::sync::Arc<dyn Fn(usize) -> Result<T> + Send + Sync>;

impl EpochLoader<Batch> {
    /// The classification loader: augmented views of `set` in `order`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        set: std::sync::Arc<ImageSet>,
        order: Vec<usize>,
        batch: usize,
        size: u32,
        augment: Augment,
        preprocess: Preprocess,
        seed: u64,
        epoch: usize,
        workers: usize,
        skip: usize,
    ) -> Self {
        let ranges = batch_ranges(order.len(), batch, true);
        let n = ranges.len();
        let build: BuildBatch<Batch> = std::sync::Arc::new(move |b| {
            build_batch(&set, &order[ranges[b].clone()], size, Some(&augment), &preprocess, seed, epoch)
        });
        Self::spawn(n, workers, skip, build)
    }
}

impl<T: Send + 'static> EpochLoader<T> {
    /// Batches `skip..batches`, batch `b` built by worker `b % workers` with `build(b)`.
    pub fn spawn(batches: usize, workers: usize, skip: usize, build: BuildBatch<T>) -> Self {
        let workers = workers.max(1);
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers {
            let (tx, rx) = sync_channel(2);
            receivers.push(rx);
            let build = build.clone();
            handles.push(std::thread::spawn(move || {
                let mut b = skip + (w + workers - skip % workers) % workers;
                while b < batches {
                    if tx.send(build(b)).is_err() {
                        return;
                    }
                    b += workers;
                }
            }));
        }
        EpochLoader { receivers, next: skip, end: batches, handles }
    }

    /// Total batches in the epoch (including skipped ones).
    pub fn len(&self) -> usize {
        self.end
    }

    pub fn is_empty(&self) -> bool {
        self.end == 0
    }
}

impl<T> Iterator for EpochLoader<T> {
    type Item = (usize, Result<T>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let b = self.next;
        self.next += 1;
        let rx = &self.receivers[b % self.receivers.len()];
        Some((b, rx.recv().unwrap_or_else(|_| Err(TrainerError::Config("a data loader thread died".into())))))
    }
}

impl<T> Drop for EpochLoader<T> {
    fn drop(&mut self) {
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;
    use std::sync::Arc;

    #[test]
    fn ranges_drop_only_a_lone_last_sample() {
        assert_eq!(batch_ranges(10, 4, true), vec![0..4, 4..8, 8..10]);
        assert_eq!(batch_ranges(9, 4, true), vec![0..4, 4..8]);
        assert_eq!(batch_ranges(9, 4, false), vec![0..4, 4..8, 8..9]);
        assert_eq!(batch_ranges(1, 4, true), vec![0..1]);
    }

    #[test]
    fn order_and_skip_are_deterministic() {
        let set = Arc::new(ImageSet {
            images: (0..11).map(|i| RgbImage::from_pixel(12, 12, image::Rgb([i as u8 * 20, 0, 0]))).collect(),
            labels: (0..11).map(|i| i % 3).collect(),
            paths: (0..11).map(|i| format!("{i}.png").into()).collect(),
        });
        let order: Vec<usize> = (0..11).rev().collect();
        let pre = Preprocess::imagenet_stretch(8);
        let run = |workers, skip| {
            EpochLoader::start(set.clone(), order.clone(), 3, 8, Augment::standard(), pre.clone(), 5, 2, workers, skip)
                .map(|(b, r)| (b, r.unwrap()))
                .collect::<Vec<_>>()
        };
        let all = run(1, 0);
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].1.labels, vec![10 % 3, 9 % 3, 8 % 3]);
        let two = run(2, 0);
        let skipped = run(3, 2);
        assert_eq!(skipped.len(), 2);
        for (a, b) in all.iter().zip(&two) {
            assert_eq!(a.1.pixels, b.1.pixels);
        }
        assert_eq!(skipped[0].0, 2);
        assert_eq!(skipped[0].1.pixels, all[2].1.pixels);
        // Dropping a loader part-way does not hang.
        let mut l = EpochLoader::start(set.clone(), order.clone(), 2, 8, Augment::none(), pre, 5, 0, 2, 0);
        assert!(l.next().is_some());
        drop(l);
    }
}
