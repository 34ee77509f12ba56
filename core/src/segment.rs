//! Segmentation decoding, shared by the runtime and the trainer's validation: each pixel's
//! class from per-pixel logits, class maps resized by nearest neighbour, class coverage.

/// The class of each pixel: the argmax over `classes` planes of `plane` logits each
/// (`[classes, H, W]`, row-major); ties go to the lower class.
pub fn argmax_classes(logits: &[f32], classes: usize, plane: usize) -> Vec<u8> {
    (0..plane)
        .map(|j| {
            let mut best = 0;
            for c in 1..classes {
                if logits[c * plane + j] > logits[best * plane + j] {
                    best = c;
                }
            }
            best as u8
        })
        .collect()
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

/// Pixels of each class (ids at or past `classes`, e.g. 255 = ignore, count for none).
pub fn class_counts(ids: &[u8], classes: usize) -> Vec<usize> {
    let mut n = vec![0usize; classes];
    for &c in ids {
        if let Some(x) = n.get_mut(c as usize) {
            *x += 1;
        }
    }
    n
}

/// Each class's share of the pixels (ids at or past `classes` count for none).
pub fn coverage(ids: &[u8], classes: usize) -> Vec<f64> {
    class_counts(ids, classes).into_iter().map(|k| k as f64 / ids.len().max(1) as f64).collect()
}

/// Run-length encoding of a class map, row-major: `[class, run]` pairs (what `serve` returns
/// for a mask: a 480x360 field photo is a few hundred pairs, not 170 k numbers).
pub fn rle_encode(ids: &[u8]) -> Vec<[u32; 2]> {
    let mut out: Vec<[u32; 2]> = Vec::new();
    for &c in ids {
        match out.last_mut() {
            Some(r) if r[0] == c as u32 => r[1] += 1,
            _ => out.push([c as u32, 1]),
        }
    }
    out
}

/// The class map back from [`rle_encode`]'s pairs.
pub fn rle_decode(runs: &[[u32; 2]]) -> Vec<u8> {
    runs.iter().flat_map(|&[c, n]| std::iter::repeat_n(c as u8, n as usize)).collect()
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

    #[test]
    fn rle_round_trips() {
        let ids = vec![0, 0, 0, 2, 2, 1, 0, 0];
        let runs = rle_encode(&ids);
        assert_eq!(runs, vec![[0, 3], [2, 2], [1, 1], [0, 2]]);
        assert_eq!(rle_decode(&runs), ids);
        assert!(rle_encode(&[]).is_empty());
    }

    #[test]
    fn argmax_and_coverage() {
        // 2 classes over 3 pixels: class 1 wins at pixel 1, ties go to class 0.
        let logits = [0.5, 0.1, 0.0, 0.2, 0.9, 0.0];
        let ids = argmax_classes(&logits, 2, 3);
        assert_eq!(ids, vec![0, 1, 0]);
        assert_eq!(coverage(&ids, 2), vec![2.0 / 3.0, 1.0 / 3.0]);
    }
}
