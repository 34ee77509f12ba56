//! COCO run-length masks and polygon rasterization, as pycocotools computes them (its C
//! `maskApi.c`: `rleFrPoly`, `rleFrString`), so a polygon label gives the same pixels here as
//! in the COCO tools and every model trained on their masks. Checked against pycocotools on
//! golden cases (core/tests/golden/rasterize).
//!
//! A COCO RLE runs down the columns (Fortran order: pixel `(x, y)` is index `x * h + y`),
//! starting with a run of zeros.

/// A binary mask as COCO run lengths: alternating runs of 0 and 1, column by column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rle {
    pub height: u32,
    pub width: u32,
    pub counts: Vec<u32>,
}

impl Rle {
    /// Uncompressed COCO RLE (`{"counts": [..], "size": [h, w]}`): the runs must cover the
    /// image exactly.
    pub fn from_counts(counts: Vec<u32>, height: u32, width: u32) -> Result<Rle, String> {
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        let want = u64::from(height) * u64::from(width);
        if total != want {
            return Err(format!("RLE counts sum to {total}, the image has {height}x{width} = {want} pixels"));
        }
        Ok(Rle { height, width, counts })
    }

    /// Compressed COCO RLE (the `counts` string): pycocotools' `rleFrString`, 5 bits per
    /// character from '0', a continuation bit, and each count after the second stored as the
    /// difference to the one two before.
    pub fn from_compressed(s: &str, height: u32, width: u32) -> Result<Rle, String> {
        let bytes = s.as_bytes();
        let mut counts: Vec<u32> = Vec::new();
        let mut p = 0;
        while p < bytes.len() {
            let (mut x, mut k, mut more) = (0i64, 0u32, true);
            while more {
                let Some(&b) = bytes.get(p) else {
                    return Err(format!("compressed RLE ends inside a number (at character {p})"));
                };
                if !(48..48 + 64).contains(&b) {
                    return Err(format!("character {:?} at {p} is not in a compressed RLE's alphabet", b as char));
                }
                if k > 6 {
                    return Err(format!("a number longer than 7 characters at {p}"));
                }
                let c = i64::from(b - 48);
                x |= (c & 0x1f) << (5 * k);
                more = c & 0x20 != 0;
                p += 1;
                k += 1;
                if !more && c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
            }
            if counts.len() > 2 {
                x += i64::from(counts[counts.len() - 2]);
            }
            let c = u32::try_from(x).map_err(|_| format!("run {} decodes to {x}", counts.len()))?;
            counts.push(c);
        }
        Rle::from_counts(counts, height, width)
    }

    /// A polygon (`[x1, y1, x2, y2, ...]` in pixels) rasterized as pycocotools' `rleFrPoly`:
    /// the outline traced on a 5x finer grid, and a pixel set when its centre lies inside.
    pub fn from_polygon(xy: &[f64], height: u32, width: u32) -> Rle {
        let (h, w) = (i64::from(height), i64::from(width));
        let scale = 5.0;
        let k = xy.len() / 2;
        if k == 0 {
            return Rle { height, width, counts: vec![height * width] };
        }
        // C's `(int)(v + .5)` truncates toward zero.
        let mut x: Vec<i64> = (0..k).map(|j| (scale * xy[2 * j] + 0.5) as i64).collect();
        let mut y: Vec<i64> = (0..k).map(|j| (scale * xy[2 * j + 1] + 0.5) as i64).collect();
        x.push(x[0]);
        y.push(y[0]);
        // Dense points along the outline.
        let (mut u, mut v) = (Vec::new(), Vec::new());
        for j in 0..k {
            let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
            let (dx, dy) = ((xe - xs).abs(), (ys - ye).abs());
            let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
            if flip {
                std::mem::swap(&mut xs, &mut xe);
                std::mem::swap(&mut ys, &mut ye);
            }
            if dx >= dy {
                let s = if dx == 0 { 0.0 } else { (ye - ys) as f64 / dx as f64 };
                for d in 0..=dx {
                    let t = if flip { dx - d } else { d };
                    u.push(t + xs);
                    v.push((ys as f64 + s * t as f64 + 0.5) as i64);
                }
            } else {
                let s = (xe - xs) as f64 / dy as f64;
                for d in 0..=dy {
                    let t = if flip { dy - d } else { d };
                    v.push(t + ys);
                    u.push((xs as f64 + s * t as f64 + 0.5) as i64);
                }
            }
        }
        // Where the outline crosses a pixel column's centre, back on the pixel grid.
        let mut starts: Vec<u64> = Vec::new();
        for j in 1..u.len() {
            if u[j] == u[j - 1] {
                continue;
            }
            let xd = (if u[j] < u[j - 1] { u[j] } else { u[j] - 1 }) as f64;
            let xd = (xd + 0.5) / scale - 0.5;
            if xd.floor() != xd || xd < 0.0 || xd > (w - 1) as f64 {
                continue;
            }
            let yd = (if v[j] < v[j - 1] { v[j] } else { v[j - 1] }) as f64;
            let yd = ((yd + 0.5) / scale - 0.5).clamp(0.0, h as f64).ceil();
            starts.push((xd as i64 * h + yd as i64) as u64);
        }
        // The crossings, sorted, are where runs toggle; equal ones cancel.
        starts.push((h * w) as u64);
        starts.sort_unstable();
        let mut prev = 0u64;
        let deltas: Vec<u64> = starts
            .iter()
            .map(|&t| {
                let d = t - prev;
                prev = t;
                d
            })
            .collect();
        let mut counts: Vec<u32> = vec![deltas[0] as u32];
        let mut j = 1;
        while j < deltas.len() {
            if deltas[j] > 0 {
                counts.push(deltas[j] as u32);
                j += 1;
            } else {
                j += 1;
                if j < deltas.len() {
                    *counts.last_mut().expect("one count at least") += deltas[j] as u32;
                    j += 1;
                }
            }
        }
        Rle { height, width, counts }
    }

    /// The compressed `counts` string pycocotools writes (`rleToString`): the inverse of
    /// [`Rle::from_compressed`].
    pub fn to_compressed(&self) -> String {
        let mut s = String::new();
        for (i, &c) in self.counts.iter().enumerate() {
            let mut x = i64::from(c) - if i > 2 { i64::from(self.counts[i - 2]) } else { 0 };
            loop {
                let mut c = (x & 0x1f) as u8;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push((c + 48) as char);
                if !more {
                    break;
                }
            }
        }
        s
    }

    /// Pixels set.
    pub fn area(&self) -> u64 {
        self.counts.iter().skip(1).step_by(2).map(|&c| u64::from(c)).sum()
    }

    /// Sets `value` at the mask's pixels in `ids`, a row-major image of the mask's size.
    pub fn paint(&self, ids: &mut [u8], value: u8) {
        let (h, w) = (self.height as usize, self.width as usize);
        debug_assert_eq!(ids.len(), h * w);
        let mut k = 0usize;
        for (i, &c) in self.counts.iter().enumerate() {
            if i % 2 == 1 {
                for p in k..(k + c as usize).min(h * w) {
                    ids[(p % h) * w + p / h] = value;
                }
            }
            k += c as usize;
        }
    }

    /// The mask as 0/1, row-major.
    pub fn decode(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.height as usize * self.width as usize];
        self.paint(&mut out, 1);
        out
    }

    /// The union of masks of one size (an object drawn as several polygons).
    pub fn union(parts: &[Rle]) -> Option<Rle> {
        let first = parts.first()?;
        let mut ids = vec![0u8; first.height as usize * first.width as usize];
        for p in parts {
            p.paint(&mut ids, 1);
        }
        Some(Rle::encode(&ids, first.height, first.width))
    }

    /// A row-major 0/1 mask as COCO RLE.
    pub fn encode(ids: &[u8], height: u32, width: u32) -> Rle {
        let (h, w) = (height as usize, width as usize);
        let mut counts = Vec::new();
        let (mut cur, mut run) = (0u8, 0u32);
        for x in 0..w {
            for y in 0..h {
                let v = u8::from(ids[y * w + x] != 0);
                if v != cur {
                    counts.push(run);
                    run = 0;
                    cur = v;
                }
                run += 1;
            }
        }
        counts.push(run);
        Rle { height, width, counts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4x3 rectangle from (1, 1) to (5, 4) covers pixel centres x 1..4, y 1..3.
    #[test]
    fn an_axis_aligned_square_covers_the_pixels_whose_centres_it_holds() {
        let r = Rle::from_polygon(&[1.0, 1.0, 5.0, 1.0, 5.0, 4.0, 1.0, 4.0], 6, 7);
        let m = r.decode();
        for y in 0..6 {
            for x in 0..7 {
                let inside = (1..5).contains(&x) && (1..4).contains(&y);
                assert_eq!(m[y * 7 + x] == 1, inside, "pixel ({x}, {y})");
            }
        }
        assert_eq!(r.area(), 12);
        assert_eq!(Rle::encode(&m, 6, 7), r);
    }

    /// A mask's compressed string (written as pycocotools' C code does) decodes back to it;
    /// bad strings are refused.
    #[test]
    fn compressed_strings_decode_and_bad_ones_are_refused() {
        let r = Rle::from_polygon(&[2.0, 0.5, 30.0, 4.0, 18.5, 27.0, 3.0, 20.0], 32, 40);
        let s = r.to_compressed();
        assert_eq!(Rle::from_compressed(&s, 32, 40).unwrap(), r);
        assert!(Rle::from_compressed(&s, 32, 41).unwrap_err().contains("1312 pixels"));
        assert!(Rle::from_compressed("0~", 32, 40).unwrap_err().contains("alphabet"));
        assert!(Rle::from_compressed("o", 32, 40).unwrap_err().contains("ends inside"));
    }
}
