//! Box overlap on `[x1, y1, x2, y2]` corner boxes.

pub fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

fn intersection(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    w * h
}

/// Intersection over union; 0 for two empty boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let inter = intersection(a, b);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Generalized IoU (Rezatofighi et al. 2019): IoU minus the share of the smallest enclosing
/// box not covered by the union; in [-1, 1], and informative for disjoint boxes.
pub fn giou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let inter = intersection(a, b);
    let union = area(a) + area(b) - inter;
    let enclose = (a[2].max(b[2]) - a[0].min(b[0])).max(0.0) * (a[3].max(b[3]) - a[1].min(b[1])).max(0.0);
    if union <= 0.0 || enclose <= 0.0 {
        return 0.0;
    }
    inter / union - (enclose - union) / enclose
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_and_giou_hand_cases() {
        let a = [0.0, 0.0, 2.0, 2.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(giou(&a, &a), 1.0);
        let b = [1.0, 1.0, 3.0, 3.0];
        assert!((iou(&a, &b) - 1.0 / 7.0).abs() < 1e-6);
        // enclosing 3x3 = 9, union 7: giou = 1/7 - 2/9
        assert!((giou(&a, &b) - (1.0 / 7.0 - 2.0 / 9.0)).abs() < 1e-6);
        let far = [4.0, 0.0, 6.0, 2.0];
        assert_eq!(iou(&a, &far), 0.0);
        // enclosing 6x2 = 12, union 8: giou = -4/12
        assert!((giou(&a, &far) + 1.0 / 3.0).abs() < 1e-6);
        let empty = [1.0, 1.0, 1.0, 1.0];
        assert_eq!(iou(&empty, &empty), 0.0);
    }
}
