//! Counting lines and zones, as the user draws them on the image: `NAME:x1,y1,x2,y2` for a
//! line, `NAME:x1,y1,x2,y2,x3,y3,...` for a polygon, in pixels of the source frames.

use serde::Serialize;

use crate::error::{Result, TrackError};

pub type Point = [f64; 2];

/// A counting line (a segment): crossings are counted from its left side to its right
/// ("in", looking from the first point to the second) and back ("out").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub name: String,
    pub a: Point,
    pub b: Point,
}

/// A polygon zone (a pen, a trough, a gate area).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Zone {
    pub name: String,
    pub polygon: Vec<Point>,
}

/// `NAME:v1,v2,...`: the name and at least `min` numbers (an even count).
fn parse_named(spec: &str, what: &str, min: usize) -> Result<(String, Vec<Point>)> {
    let bad = |msg: String| TrackError::Setting(format!("{what} {spec:?}: {msg}"));
    let (name, coords) = spec.split_once(':').ok_or_else(|| bad("expected NAME:x1,y1,x2,y2,...".into()))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(bad("the name is empty".into()));
    }
    let values: Vec<f64> = coords
        .split(',')
        .map(|v| {
            let v = v.trim();
            v.parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| bad(format!("{v:?} is not a number")))
        })
        .collect::<Result<_>>()?;
    if values.len() % 2 == 1 || values.len() < min {
        return Err(bad(format!("{} numbers; give x,y pairs, at least {}", values.len(), min / 2)));
    }
    Ok((name.to_string(), values.chunks(2).map(|c| [c[0], c[1]]).collect()))
}

impl Line {
    pub fn parse(spec: &str) -> Result<Line> {
        let (name, pts) = parse_named(spec, "--line", 4)?;
        if pts.len() != 2 {
            return Err(TrackError::Setting(format!("--line {spec:?}: a line is two points (x1,y1,x2,y2)")));
        }
        if pts[0] == pts[1] {
            return Err(TrackError::Setting(format!("--line {spec:?}: its two points are the same")));
        }
        Ok(Line { name, a: pts[0], b: pts[1] })
    }

    /// Signed distance of `p` from the line's infinite extension (positive on the right,
    /// looking from `a` to `b` in image coordinates, y down) and where its foot falls along
    /// the segment (0 at `a`, 1 at `b`).
    pub fn locate(&self, p: Point) -> (f64, f64) {
        let (dx, dy) = (self.b[0] - self.a[0], self.b[1] - self.a[1]);
        let len2 = dx * dx + dy * dy;
        let (px, py) = (p[0] - self.a[0], p[1] - self.a[1]);
        // Cross product sign: with y pointing down, positive is the right-hand side.
        let side = (dx * py - dy * px) / len2.sqrt();
        (side, (px * dx + py * dy) / len2)
    }
}

impl Zone {
    pub fn parse(spec: &str) -> Result<Zone> {
        let (name, polygon) = parse_named(spec, "--zone", 6)?;
        let z = Zone { name, polygon };
        if z.area() <= 0.0 {
            return Err(TrackError::Setting(format!("--zone {spec:?}: the polygon has no area")));
        }
        Ok(z)
    }

    pub fn area(&self) -> f64 {
        let n = self.polygon.len();
        (0..n)
            .map(|i| {
                let (p, q) = (self.polygon[i], self.polygon[(i + 1) % n]);
                p[0] * q[1] - q[0] * p[1]
            })
            .sum::<f64>()
            .abs()
            / 2.0
    }

    /// Whether `p` is inside (even-odd rule), and its distance to the nearest edge.
    pub fn locate(&self, p: Point) -> (bool, f64) {
        let n = self.polygon.len();
        let mut inside = false;
        let mut dist = f64::INFINITY;
        for i in 0..n {
            let (a, b) = (self.polygon[i], self.polygon[(i + 1) % n]);
            if (a[1] > p[1]) != (b[1] > p[1]) {
                let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
                if p[0] < x {
                    inside = !inside;
                }
            }
            dist = dist.min(segment_distance(p, a, b));
        }
        (inside, dist)
    }
}

fn segment_distance(p: Point, a: Point, b: Point) -> f64 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 { (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
    let (x, y) = (a[0] + t * dx, a[1] + t * dy);
    ((p[0] - x).powi(2) + (p[1] - y).powi(2)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_by_name() {
        let l = Line::parse("gate:0,100,200,100").unwrap();
        assert_eq!((l.name.as_str(), l.a, l.b), ("gate", [0.0, 100.0], [200.0, 100.0]));
        let z = Zone::parse("trough: 0,0, 10,0, 10,10, 0,10").unwrap();
        assert_eq!(z.area(), 100.0);
        let err = |r: Result<Line>| r.unwrap_err().to_string();
        assert_eq!(err(Line::parse("gate")), "--line \"gate\": expected NAME:x1,y1,x2,y2,...");
        assert!(err(Line::parse("g:1,2,3")).contains("3 numbers"));
        assert!(err(Line::parse("g:1,2,x,4")).contains("\"x\" is not a number"));
        assert!(err(Line::parse("g:1,2,1,2")).contains("the same"));
        assert!(err(Line::parse("g:1,2,3,4,5,6")).contains("two points"));
        assert!(Zone::parse("z:0,0,1,1,2,2").unwrap_err().to_string().contains("no area"));
        assert!(Zone::parse(":0,0,1,0,1,1").unwrap_err().to_string().contains("name is empty"));
    }

    #[test]
    fn sides_and_insides() {
        // Horizontal line left to right; y down: below the line is the right-hand side.
        let l = Line::parse("g:0,100,200,100").unwrap();
        let (below, t) = l.locate([50.0, 130.0]);
        assert_eq!((below, t), (30.0, 0.25));
        assert!(l.locate([50.0, 70.0]).0 < 0.0);
        let z = Zone::parse("z:0,0,100,0,100,50,0,50").unwrap();
        assert_eq!(z.locate([10.0, 20.0]), (true, 10.0));
        assert_eq!(z.locate([130.0, 20.0]), (false, 30.0));
    }
}
