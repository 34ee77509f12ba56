//! Segmentation splits decoded once into memory (in parallel): each image with its class map.

use std::path::PathBuf;

use fieldkit_core::dataset::masks::MaskDataset;
use fieldkit_core::segment::class_counts;
use fieldkit_core::{image_io, parallel};
use image::RgbImage;

use crate::error::Result;

/// A decoded split: images at their own size, each with its class ids (row-major, the
/// image's size), in the folder's order.
#[derive(Debug, Clone)]
pub struct SegSet {
    pub images: Vec<RgbImage>,
    pub masks: Vec<Vec<u8>>,
    pub paths: Vec<PathBuf>,
    pub mask_paths: Vec<PathBuf>,
}

impl SegSet {
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// What the split holds (names and sizes of every image and mask), for a model's card.
    pub fn fingerprint(&self) -> String {
        let items =
            self.paths.iter().zip(&self.mask_paths).flat_map(|(i, m)| [(i.as_path(), "image"), (m.as_path(), "mask")]);
        fieldkit_core::dataset::fingerprint(items)
    }

    /// Pixels of each class over the split (ids at or past `classes` not counted).
    pub fn pixel_counts(&self, classes: usize) -> Vec<usize> {
        let mut n = vec![0usize; classes];
        for m in &self.masks {
            for (total, k) in n.iter_mut().zip(class_counts(m, classes)) {
                *total += k;
            }
        }
        n
    }
}

/// The names and sizes of images and their masks, hashed (a model card's `data_fingerprint`).
pub fn pairs_fingerprint(images: &[PathBuf], masks: &[PathBuf]) -> String {
    let items = images.iter().zip(masks).flat_map(|(i, m)| [(i.as_path(), "image"), (m.as_path(), "mask")]);
    fieldkit_core::dataset::fingerprint(items)
}

/// Decodes image / mask pairs (from [`MaskDataset::pairs`]); a mask of another size than its
/// image stops the run (`fieldkit data check` names each problem).
pub fn load_seg_pairs(data: &MaskDataset, pairs: &[(PathBuf, PathBuf)], workers: usize) -> Result<SegSet> {
    let decoded = parallel::map_indexed(
        pairs.len(),
        workers,
        || Ok(()),
        |_, i| -> fieldkit_core::Result<(RgbImage, Vec<u8>)> {
            let (image, mask) = &pairs[i];
            let img = image_io::read_rgb(image)?;
            let map = data.read_mask(image, mask, Some(img.dimensions()))?;
            Ok((img, map.ids))
        },
    )?;
    let (images, masks) = decoded.into_iter().unzip();
    let (paths, mask_paths) = pairs.iter().cloned().unzip();
    Ok(SegSet { images, masks, paths, mask_paths })
}
