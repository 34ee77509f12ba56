//! Which files are one photo: re-encoded, resized or mirrored copies (a mirror-blind picture
//! hash) and Roboflow's augmented copies of one source photo (their names). `data check` warns
//! when one photo sits in two splits; training carves its held-out split by whole photos, so
//! no copy of a held-out photo is trained on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::error::Result;
use crate::{image_io, parallel};

/// Picture hashes this many bits apart or fewer are one photo. Measured on the shared data
/// (copies found across splits at 4 / 6 bits): cattle-breed5 115 / 121 of 166 val images
/// (mirrored `_c` files; 126 by name), sesame-weed-det 175 / 191 of 260, blackgram-disease5
/// 0 / 2, and weed-cls9, which has no copies by name, 0 / 0.
pub const LOOK_BITS: u32 = 6;

/// A 64-bit difference hash of the picture (Krawetz's dHash: a 9x8 grey thumbnail, one bit per
/// pair of neighbours) taken of the image and of its mirror, the smaller kept: re-encoded,
/// resized and mirrored copies of one photo hash alike. Flat images (every bit equal) give
/// `None`: they would match each other without being copies. The thumbnail is a plain box
/// average (not `image`'s resampler, whose code would cost the edge binary 4 KB).
pub fn look_hash(img: &RgbImage) -> Option<u64> {
    let (w, h) = img.dimensions();
    if w < 9 || h < 8 {
        return None;
    }
    let mut cells = [[0f32; 9]; 8];
    for (cy, row) in cells.iter_mut().enumerate() {
        let (y0, y1) = (cy as u32 * h / 8, (cy as u32 + 1) * h / 8);
        for (cx, cell) in row.iter_mut().enumerate() {
            let (x0, x1) = (cx as u32 * w / 9, (cx as u32 + 1) * w / 9);
            let mut sum = 0f32;
            for y in y0..y1 {
                for x in x0..x1 {
                    let [r, g, b] = img.get_pixel(x, y).0;
                    sum += 0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32;
                }
            }
            *cell = sum / ((x1 - x0) * (y1 - y0)) as f32;
        }
    }
    let bits = |mirror: bool| {
        let mut hash = 0u64;
        for row in &cells {
            for x in 0..8 {
                let (a, b) = if mirror { (8 - x, 7 - x) } else { (x, x + 1) };
                hash = (hash << 1) | u64::from(row[a] < row[b]);
            }
        }
        hash
    };
    let hash = bits(false).min(bits(true));
    (hash != 0 && hash != u64::MAX).then_some(hash)
}

/// Whether two picture hashes are one photo.
pub fn same_look(a: u64, b: u64) -> bool {
    (a ^ b).count_ones() <= LOOK_BITS
}

/// The source photo a file was made from, where its name says so: Roboflow exports name each
/// copy `<photo>_<ext>.rf.<hash>.<ext>`, so augmented copies of one photo share `<photo>_<ext>`.
/// `None` for names without that mark.
pub fn source_photo(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    name.find(".rf.").map(|i| &name[..i]).filter(|stem| !stem.is_empty())
}

/// For each of `paths`, the index of the first file of its photo: files join one group when
/// they share a Roboflow source photo or their pictures hash alike (transitively). Reads and
/// decodes every file on `workers` threads; an unreadable file is an error naming it.
pub fn photo_groups(paths: &[PathBuf], workers: usize) -> Result<Vec<usize>> {
    let looks =
        parallel::map_indexed(paths.len(), workers, || Ok(()), |_, i| Ok(look_hash(&image_io::read_rgb(&paths[i])?)))?;
    let mut parent: Vec<usize> = (0..paths.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut join = |a: usize, b: usize| {
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        parent[ra.max(rb)] = ra.min(rb);
    };
    let mut by_source: HashMap<&str, usize> = HashMap::new();
    for (i, p) in paths.iter().enumerate() {
        if let Some(s) = source_photo(p) {
            match by_source.get(s) {
                Some(&first) => join(first, i),
                None => {
                    by_source.insert(s, i);
                }
            }
        }
    }
    // All pairs: 9,364 files (weed-cls9's train) are 44 M XORs, a fraction of a second.
    for i in 0..paths.len() {
        let Some(a) = looks[i] else { continue };
        let alike: Vec<usize> =
            looks[..i].iter().enumerate().filter(|(_, b)| b.is_some_and(|b| same_look(a, b))).map(|(j, _)| j).collect();
        for j in alike {
            join(j, i);
        }
    }
    Ok((0..paths.len()).map(|i| root(&mut parent, i)).collect())
}

/// FNV-1a of `name`, its offset basis XORed with `seed`: a choice by file name that is the same
/// on every run and machine (the held-out split here, `fieldkit label`'s val split).
pub fn name_hash(name: &str, seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Which of `paths` form a held-out split of about `fraction` of them, chosen by whole photos
/// ([`photo_groups`]) from a hash of each photo's first file name and `seed`: the same files
/// every run, on every machine.
pub fn holdout_mask(paths: &[PathBuf], fraction: f64, seed: u64, workers: usize) -> Result<Vec<bool>> {
    if fraction <= 0.0 {
        return Ok(vec![false; paths.len()]);
    }
    let groups = photo_groups(paths, workers)?;
    let pick = |first: usize| {
        let name = paths[first].file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        (name_hash(&name, seed) % 1_000_000) as f64 / 1_000_000.0 < fraction
    };
    Ok(groups.iter().map(|&g| pick(g)).collect())
}

/// `items` split into (kept, held out) by [`holdout_mask`] over each item's file.
pub fn split_holdout<T>(
    items: Vec<T>,
    path: impl Fn(&T) -> &Path,
    fraction: f64,
    seed: u64,
    workers: usize,
) -> Result<(Vec<T>, Vec<T>)> {
    let paths: Vec<PathBuf> = items.iter().map(|i| path(i).to_path_buf()).collect();
    let mask = holdout_mask(&paths, fraction, seed, workers)?;
    let (held, kept): (Vec<_>, Vec<_>) = items.into_iter().zip(mask).partition(|(_, m)| *m);
    Ok((kept.into_iter().map(|(i, _)| i).collect(), held.into_iter().map(|(i, _)| i).collect()))
}

#[cfg(test)]
pub(crate) mod tests {
    use image::Rgb;

    use super::*;

    /// A textured picture; `seed` makes another.
    pub(crate) fn photo(seed: u32) -> RgbImage {
        RgbImage::from_fn(96, 64, |x, y| {
            let v = ((x * (3 + seed) + y * y * (seed + 1) / 7 + seed * 40) % 256) as u8;
            Rgb([v, v.wrapping_mul(3), 255 - v])
        })
    }

    #[test]
    fn source_photo_from_roboflow_names() {
        assert_eq!(source_photo(Path::new("x/Nutsedge_11_jpg.rf.3205.jpg")), Some("Nutsedge_11_jpg"));
        assert_eq!(source_photo(Path::new("x/119l.jpg")), None);
        assert_eq!(source_photo(Path::new(".rf.x.jpg")), None);
    }

    /// Copies join their photo's group (a mirror, a name), others stay apart, and the held-out
    /// split takes whole groups, the same ones for the same seed.
    #[test]
    fn groups_and_holdout_keep_a_photo_together() {
        let d = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        let mut save = |name: &str, img: RgbImage| {
            let p = d.path().join(name);
            img.save(&p).unwrap();
            paths.push(p);
        };
        save("a.png", photo(1));
        save("b.png", photo(2));
        save("a_mirrored.jpg", image::imageops::flip_horizontal(&photo(1)));
        save("p_jpg.rf.01.jpg", photo(3));
        save("p_jpg.rf.02.jpg", photo(4));
        save("c.png", photo(5));
        assert_eq!(photo_groups(&paths, 2).unwrap(), [0, 1, 0, 3, 3, 5]);
        for seed in 0..20 {
            let m = holdout_mask(&paths, 0.5, seed, 2).unwrap();
            assert_eq!((m[0], m[3]), (m[2], m[4]), "seed {seed}: {m:?}");
            assert_eq!(m, holdout_mask(&paths, 0.5, seed, 1).unwrap());
        }
        assert_eq!(holdout_mask(&paths, 0.0, 1, 2).unwrap(), [false; 6]);
        let held: usize = (0..200).map(|s| holdout_mask(&paths, 0.5, s, 2).unwrap()[1] as usize).sum();
        assert!((60..140).contains(&held), "{held} of 200 seeds hold b.png out at 0.5");
    }
}
