//! The constant-velocity Kalman filter of SORT / DeepSORT / ByteTrack on a box's centre,
//! aspect ratio and height (`[cx, cy, a, h]` and their velocities): process and measurement
//! noise grow with the box height, so near and far animals are filtered alike. Plain 8x8
//! arithmetic on arrays; the same numbers as ByteTrack's `KalmanFilter` (numpy / scipy
//! Cholesky).

// Index loops read as the matrix formulas they implement.
#![allow(clippy::needless_range_loop)]

pub type Mean = [f64; 8];
pub type Cov = [[f64; 8]; 8];

/// Noise per unit of box height, for position and for velocity (ByteTrack's 1/20, 1/160).
const STD_POSITION: f64 = 1.0 / 20.0;
const STD_VELOCITY: f64 = 1.0 / 160.0;

/// `[cx, cy, a, h]` of an `[x1, y1, x2, y2]` box.
pub fn xyah(b: [f64; 4]) -> [f64; 4] {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    [b[0] + w / 2.0, b[1] + h / 2.0, if h > 0.0 { w / h } else { 0.0 }, h]
}

/// `[x1, y1, x2, y2]` of a state's first four entries.
pub fn xyxy(m: &Mean) -> [f64; 4] {
    let (h, w) = (m[3], m[2] * m[3]);
    [m[0] - w / 2.0, m[1] - h / 2.0, m[0] + w / 2.0, m[1] + h / 2.0]
}

fn diag(v: [f64; 8]) -> Cov {
    let mut c = [[0.0; 8]; 8];
    for i in 0..8 {
        c[i][i] = v[i] * v[i];
    }
    c
}

/// A new track's state from its first measurement: zero velocity, wide velocity noise.
pub fn initiate(z: [f64; 4]) -> (Mean, Cov) {
    let mut mean = [0.0; 8];
    mean[..4].copy_from_slice(&z);
    let h = z[3];
    let (p, v) = (2.0 * STD_POSITION * h, 10.0 * STD_VELOCITY * h);
    (mean, diag([p, p, 1e-2, p, v, v, 1e-5, v]))
}

/// One frame ahead: `x ← F x`, `P ← F P Fᵀ + Q`.
pub fn predict(mean: &mut Mean, cov: &mut Cov) {
    let h = mean[3];
    let (p, v) = (STD_POSITION * h, STD_VELOCITY * h);
    let q = diag([p, p, 1e-2, p, v, v, 1e-5, v]);
    for i in 0..4 {
        mean[i] += mean[i + 4];
    }
    // F P: position rows gain their velocity rows.
    let mut a = *cov;
    for i in 0..4 {
        for j in 0..8 {
            a[i][j] += cov[i + 4][j];
        }
    }
    // (F P) Fᵀ: position columns gain their velocity columns.
    for row in a.iter_mut() {
        for j in 0..4 {
            row[j] += row[j + 4];
        }
    }
    for i in 0..8 {
        for j in 0..8 {
            cov[i][j] = a[i][j] + q[i][j];
        }
    }
}

/// Corrects the state with a measurement `z = [cx, cy, a, h]`.
pub fn update(mean: &mut Mean, cov: &mut Cov, z: [f64; 4]) {
    let h = mean[3];
    let p = STD_POSITION * h;
    let r = [p, p, 1e-1, p];
    // Innovation covariance S = H P Hᵀ + R: the top-left 4x4 block plus measurement noise.
    let mut s = [[0.0; 4]; 4];
    for i in 0..4 {
        for j in 0..4 {
            s[i][j] = cov[i][j];
        }
        s[i][i] += r[i] * r[i];
    }
    let s_inv = spd_inverse(s);
    // Gain K = P Hᵀ S⁻¹ (8x4).
    let mut k = [[0.0; 4]; 8];
    for i in 0..8 {
        for j in 0..4 {
            k[i][j] = (0..4).map(|l| cov[i][l] * s_inv[l][j]).sum();
        }
    }
    let y: [f64; 4] = std::array::from_fn(|i| z[i] - mean[i]);
    for i in 0..8 {
        mean[i] += (0..4).map(|j| k[i][j] * y[j]).sum::<f64>();
    }
    // P ← P − K S Kᵀ, and K S = P Hᵀ: P − K (P Hᵀ)ᵀ.
    let old = *cov;
    for i in 0..8 {
        for j in 0..8 {
            cov[i][j] = old[i][j] - (0..4).map(|l| k[i][l] * old[j][l]).sum::<f64>();
        }
    }
}

/// Inverse of a symmetric positive-definite 4x4 matrix through its Cholesky factor.
fn spd_inverse(a: [[f64; 4]; 4]) -> [[f64; 4]; 4] {
    let mut l = [[0.0; 4]; 4];
    for i in 0..4 {
        for j in 0..=i {
            let s: f64 = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            l[i][j] = if i == j { s.max(f64::MIN_POSITIVE).sqrt() } else { s / l[j][j] };
        }
    }
    // Solve L Lᵀ X = I column by column.
    let mut inv = [[0.0; 4]; 4];
    for c in 0..4 {
        let mut y = [0.0; 4];
        for i in 0..4 {
            let e = if i == c { 1.0 } else { 0.0 };
            y[i] = (e - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
        }
        let mut x = [0.0; 4];
        for i in (0..4).rev() {
            x[i] = (y[i] - (i + 1..4).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
        }
        for i in 0..4 {
            inv[i][c] = x[i];
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_conversions_round_trip() {
        let b = [10.0, 20.0, 50.0, 100.0];
        let z = xyah(b);
        assert_eq!(z, [30.0, 60.0, 0.5, 80.0]);
        let mut m = [0.0; 8];
        m[..4].copy_from_slice(&z);
        assert_eq!(xyxy(&m), b);
    }

    #[test]
    fn inverse_is_an_inverse() {
        let a = [[4.0, 1.0, 0.5, 0.0], [1.0, 3.0, 0.2, 0.1], [0.5, 0.2, 2.0, 0.3], [0.0, 0.1, 0.3, 1.5]];
        let inv = spd_inverse(a);
        for i in 0..4 {
            for j in 0..4 {
                let v: f64 = (0..4).map(|k| a[i][k] * inv[k][j]).sum();
                assert!((v - f64::from(u8::from(i == j))).abs() < 1e-12, "{i}{j} {v}");
            }
        }
    }

    /// A box moving at a constant 3 px/frame: after a few updates the filter predicts its
    /// next position within a pixel and has learnt the velocity.
    #[test]
    fn learns_a_constant_velocity() {
        let at = |t: f64| xyah([100.0 + 3.0 * t, 50.0, 140.0 + 3.0 * t, 130.0]);
        let (mut m, mut p) = initiate(at(0.0));
        for t in 1..20 {
            predict(&mut m, &mut p);
            update(&mut m, &mut p, at(t as f64));
        }
        predict(&mut m, &mut p);
        assert!((m[0] - at(20.0)[0]).abs() < 1.0, "{m:?}");
        assert!((m[4] - 3.0).abs() < 0.3, "vx {}", m[4]);
        // The covariance stays symmetric.
        for i in 0..8 {
            for j in 0..8 {
                assert!((p[i][j] - p[j][i]).abs() < 1e-9);
            }
        }
    }

    /// Numbers from ByteTrack's numpy filter (yolox/tracker/kalman_filter.py) on the same
    /// measurements: initiate [100, 200, 0.5, 80], predict, update with [104, 203, 0.5, 82].
    #[test]
    fn matches_bytetracks_numpy_filter() {
        let (mut m, mut p) = initiate([100.0, 200.0, 0.5, 80.0]);
        predict(&mut m, &mut p);
        // cx variance: initial (2·80/20)², plus the velocity's (10·80/160)², plus Q's (80/20)².
        assert!((p[0][0] - (64.0 + 25.0 + 16.0)).abs() < 1e-9, "{}", p[0][0]);
        update(&mut m, &mut p, [104.0, 203.0, 0.5, 82.0]);
        // K for cx = P00 / (P00 + (h/20)²) = 105 / (105 + 16).
        let k = 105.0 / 121.0;
        assert!((m[0] - (100.0 + k * 4.0)).abs() < 1e-9, "{}", m[0]);
    }
}
