//! Segmentation splits decoded once into memory (in parallel): each image with its class map.

use std::path::PathBuf;

use fieldkit_core::dataset::masks::MaskDataset;
use fieldkit_core::error::CoreError;
use fieldkit_core::{image_io, parallel};
use image::RgbImage;

use crate::error::{Result, TrainerError};

/// A decoded split: images at their own size, each with its class ids (row-major, the
/// image's size), in the folder's order.
#[derive(Debug, Clone)]
pub struct SegSet {
    pub images: Vec<RgbImage>,
    pub masks: Vec<Vec<u8>>,
    pub paths: Vec<PathBuf>,
}

impl SegSet {
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Pixels of each class over the split (ids at or past `classes` not counted).
    pub fn pixel_counts(&self, classes: usize) -> Vec<usize> {
        let mut n = vec![0usize; classes];
        for m in &self.masks {
            for &c in m {
                if let Some(x) = n.get_mut(c as usize) {
                    *x += 1;
                }
            }
        }
        n
    }
}

/// Loads split `split`: every image needs its mask, of its size (`fieldkit data check` names
/// each problem; here the first one stops the run).
pub fn load_seg_split(data: &MaskDataset, split: &str, workers: usize) -> Result<SegSet> {
    let files = data.split(split)?;
    let pairs: Vec<(PathBuf, PathBuf)> = files
        .pairs
        .into_iter()
        .map(|(image, mask)| match mask {
            Some(m) => Ok((image, m)),
            None => Err(TrainerError::Config(format!(
                "{}: no mask for it in {}/masks (fieldkit data check lists them all)",
                image.display(),
                split
            ))),
        })
        .collect::<Result<_>>()?;
    let decoded = parallel::map_indexed(
        pairs.len(),
        workers,
        || Ok(()),
        |_, i| -> fieldkit_core::Result<(RgbImage, Vec<u8>)> {
            let (image, mask) = &pairs[i];
            let img = image_io::read_rgb(image)?;
            let map = data.read_mask(mask)?;
            if (map.width, map.height) != img.dimensions() {
                return Err(CoreError::invalid(
                    mask,
                    format!("mask is {}x{}, its image {}x{}", map.width, map.height, img.width(), img.height()),
                ));
            }
            Ok((img, map.ids))
        },
    )?;
    let (images, masks) = decoded.into_iter().unzip();
    Ok(SegSet { images, masks, paths: pairs.into_iter().map(|p| p.0).collect() })
}

/// Class ids resized by nearest neighbour, each output pixel's centre mapped into `region`
/// (`[left, top, width, height]` of the `w`×`h` source; the whole of it by [`resize_ids`]).
pub fn crop_resize_ids(ids: &[u8], w: u32, h: u32, region: [f64; 4], nw: u32, nh: u32) -> Vec<u8> {
    let [left, top, cw, ch] = region;
    let mut out = Vec::with_capacity((nw * nh) as usize);
    for y in 0..nh {
        let sy = (top + (y as f64 + 0.5) * ch / nh as f64).floor().clamp(0.0, h as f64 - 1.0) as u32;
        for x in 0..nw {
            let sx = (left + (x as f64 + 0.5) * cw / nw as f64).floor().clamp(0.0, w as f64 - 1.0) as u32;
            out.push(ids[(sy * w + sx) as usize]);
        }
    }
    out
}

/// A whole `w`×`h` class map resized to `nw`×`nh` (nearest).
pub fn resize_ids(ids: &[u8], w: u32, h: u32, nw: u32, nh: u32) -> Vec<u8> {
    crop_resize_ids(ids, w, h, [0.0, 0.0, w as f64, h as f64], nw, nh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_resize_keeps_ids_and_round_trips_exact_multiples() {
        let ids: Vec<u8> = vec![0, 1, 2, 3];
        let up = resize_ids(&ids, 2, 2, 4, 4);
        assert_eq!(up, vec![0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]);
        assert_eq!(resize_ids(&up, 4, 4, 2, 2), ids);
        assert_eq!(crop_resize_ids(&up, 4, 4, [2.0, 2.0, 2.0, 2.0], 1, 1), vec![3]);
    }
}
