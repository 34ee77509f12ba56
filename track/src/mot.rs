//! MOTChallenge text files: one box per line, `frame,id,x,y,w,h,conf,class,visibility`
//! (ground truth) or `frame,id,x,y,w,h,conf,-1,-1,-1` (detections, id -1, and tracker
//! results). Frames are 1-based, `x,y` the top-left corner in pixels. Columns after `h` are
//! optional; commas or whitespace separate them, as py-motmetrics' reader accepts.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Result, TrackError};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotRow {
    pub frame: u32,
    /// Track or object id; -1 in a detection file.
    pub id: i64,
    /// `[x, y, w, h]`, top-left corner and size in pixels.
    pub bbox: [f64; 4],
    /// Detection score; in ground truth 0 marks a box to ignore and 1 one to count.
    pub conf: f64,
    pub class: i64,
    pub visibility: f64,
}

impl MotRow {
    /// `[x1, y1, x2, y2]`.
    pub fn xyxy(&self) -> [f64; 4] {
        let [x, y, w, h] = self.bbox;
        [x, y, x + w, y + h]
    }
}

/// Reads a MOTChallenge file. Every bad row is an error naming the file and line; so is an
/// id given twice in one frame (ids of -1, detections, may repeat).
pub fn read(path: &Path) -> Result<Vec<MotRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| fieldkit_core::CoreError::io(path, e))?;
    parse(&text, path)
}

/// [`read`] on text already in memory; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<MotRow>> {
    let mut rows = Vec::new();
    let mut seen: HashMap<(u32, i64), usize> = HashMap::new();
    for (k, line) in text.lines().enumerate() {
        let line_no = k + 1;
        let bad = |msg: String| TrackError::Record { path: path.to_path_buf(), line: line_no, msg };
        let fields: Vec<&str> = line.split([',', ' ', '\t']).map(str::trim).filter(|f| !f.is_empty()).collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() < 6 {
            return Err(bad(format!("{} columns; a MOTChallenge row has at least frame,id,x,y,w,h", fields.len())));
        }
        let num = |i: usize, name: &str| -> Result<f64> {
            let v: f64 = fields[i].parse().map_err(|_| bad(format!("{name} {:?} is not a number", fields[i])))?;
            if !v.is_finite() {
                return Err(bad(format!("{name} {v} is not finite")));
            }
            Ok(v)
        };
        let int = |i: usize, name: &str| -> Result<i64> {
            let v = num(i, name)?;
            if v.fract() != 0.0 {
                return Err(bad(format!("{name} {v} is not a whole number")));
            }
            Ok(v as i64)
        };
        let frame = int(0, "frame")?;
        if frame < 1 || frame > u32::MAX as i64 {
            return Err(bad(format!("frame {frame}: frames are numbered from 1")));
        }
        let id = int(1, "id")?;
        let bbox = [num(2, "x")?, num(3, "y")?, num(4, "width")?, num(5, "height")?];
        if bbox[2] < 0.0 || bbox[3] < 0.0 {
            return Err(bad(format!("negative box size {}x{}", bbox[2], bbox[3])));
        }
        let opt = |i: usize, name: &str, default: f64| if fields.len() > i { num(i, name) } else { Ok(default) };
        let row = MotRow {
            frame: frame as u32,
            id,
            bbox,
            conf: opt(6, "conf", 1.0)?,
            class: opt(7, "class", -1.0)? as i64,
            visibility: opt(8, "visibility", -1.0)?,
        };
        if id != -1 {
            if let Some(first) = seen.insert((row.frame, id), line_no) {
                return Err(bad(format!("id {id} appears twice in frame {} (first on line {first})", row.frame)));
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Writes rows in the MOTChallenge result format (`frame,id,x,y,w,h,conf,-1,-1,-1`),
/// sorted by frame then id, atomically.
pub fn write(path: &Path, rows: &[MotRow]) -> Result<()> {
    let mut sorted: Vec<&MotRow> = rows.iter().collect();
    sorted.sort_by_key(|r| (r.frame, r.id));
    let mut out = String::new();
    for r in sorted {
        let [x, y, w, h] = r.bbox;
        // Two decimals: sub-pixel enough for any metric, and the files stay diffable.
        writeln!(out, "{},{},{x:.2},{y:.2},{w:.2},{h:.2},{:.4},-1,-1,-1", r.frame, r.id, r.conf).expect("string");
    }
    fieldkit_core::fsio::write_atomic(path, out.as_bytes())?;
    Ok(())
}

/// Rows grouped by frame, in frame order.
#[derive(Debug, Clone, Default)]
pub struct Sequence {
    pub frames: BTreeMap<u32, Vec<MotRow>>,
}

impl Sequence {
    pub fn new(rows: impl IntoIterator<Item = MotRow>) -> Self {
        let mut frames: BTreeMap<u32, Vec<MotRow>> = BTreeMap::new();
        for r in rows {
            frames.entry(r.frame).or_default().push(r);
        }
        Sequence { frames }
    }

    /// Ground truth as the MOTChallenge evaluation reads it: rows with conf 0 are boxes to
    /// ignore (py-motmetrics' `min_confidence=1`).
    pub fn ground_truth(rows: impl IntoIterator<Item = MotRow>) -> Self {
        Self::new(rows.into_iter().filter(|r| r.conf != 0.0))
    }

    pub fn boxes(&self) -> usize {
        self.frames.values().map(Vec::len).sum()
    }

    pub fn last_frame(&self) -> u32 {
        self.frames.keys().next_back().copied().unwrap_or(0)
    }

    pub fn get(&self, frame: u32) -> &[MotRow] {
        self.frames.get(&frame).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_commas_and_spaces_with_optional_columns() {
        let rows = parse("1,3,10,20,30,40,1,1,0.5\n\n2 -1 1.5 2 3 4\n", Path::new("t.txt")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].bbox, [10.0, 20.0, 30.0, 40.0]);
        assert_eq!((rows[0].class, rows[0].visibility), (1, 0.5));
        assert_eq!((rows[1].frame, rows[1].id, rows[1].conf, rows[1].class), (2, -1, 1.0, -1));
        assert_eq!(rows[1].xyxy(), [1.5, 2.0, 4.5, 6.0]);
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let err = |t: &str| parse(t, Path::new("gt.txt")).unwrap_err().to_string();
        assert_eq!(
            err("1,1,0,0,1,1\n1,2,0,0,1"),
            "gt.txt:2: 5 columns; a MOTChallenge row has at least frame,id,x,y,w,h"
        );
        assert!(err("0,1,0,0,1,1").starts_with("gt.txt:1: frame 0"), "{}", err("0,1,0,0,1,1"));
        assert!(err("1,1,0,0,x,1").contains("width \"x\" is not a number"));
        assert!(err("1,1,0,0,-1,1").contains("negative box size"));
        assert!(err("1.5,1,0,0,1,1").contains("frame 1.5 is not a whole number"));
        assert_eq!(err("1,4,0,0,1,1\n1,4,2,2,1,1"), "gt.txt:2: id 4 appears twice in frame 1 (first on line 1)");
        // Detections (id -1) may share a frame.
        assert_eq!(parse("1,-1,0,0,1,1\n1,-1,2,2,1,1", Path::new("d")).unwrap().len(), 2);
    }

    #[test]
    fn writes_sorted_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        let row = |frame, id| MotRow { frame, id, bbox: [1.0, 2.0, 3.0, 4.0], conf: 0.9, class: -1, visibility: -1.0 };
        write(&p, &[row(2, 1), row(1, 7), row(1, 2)]).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back.iter().map(|r| (r.frame, r.id)).collect::<Vec<_>>(), vec![(1, 2), (1, 7), (2, 1)]);
        assert_eq!(back[0].bbox, [1.0, 2.0, 3.0, 4.0]);
        let seq = Sequence::ground_truth(back.into_iter().chain([MotRow { conf: 0.0, ..row(3, 1) }]));
        assert_eq!((seq.boxes(), seq.last_frame(), seq.get(1).len(), seq.get(9).len()), (3, 2, 2, 0));
    }
}
