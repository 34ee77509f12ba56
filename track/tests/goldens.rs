//! MOT metrics against the reference tools: TrackEval (followed everywhere) and py-motmetrics
//! (equal wherever the two tools agree), on the golden cases in tests/data/mot, written by
//! benches/reference/mot_goldens.py.

use std::path::{Path, PathBuf};

use fieldkit_track::metrics::{evaluate, ALPHAS};
use fieldkit_track::{mot, Sequence};
use serde_json::Value;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/mot");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "golden cases missing under {}", root.display());
    dirs
}

fn close(name: &str, case: &str, ours: f64, theirs: &Value) {
    let t = theirs.as_f64().unwrap_or_else(|| panic!("{case}: {name} missing"));
    assert!((ours - t).abs() <= 1e-12, "{case}: {name} ours {ours} vs reference {t}");
}

#[test]
fn equal_to_trackeval_and_motmetrics() {
    for dir in cases() {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let want: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let gt = Sequence::ground_truth(mot::read(&dir.join("gt.txt")).unwrap());
        let pred = Sequence::new(mot::read(&dir.join("pred.txt")).unwrap());
        let s = evaluate(&gt, &pred).unwrap();
        let te = &want["trackeval"];
        let h = &s.hota_detail;
        for (name, ours) in [
            ("HOTA", s.hota),
            ("DetA", s.deta),
            ("AssA", s.assa),
            ("LocA", s.loca),
            ("DetRe", h.detre()),
            ("DetPr", h.detpr()),
            ("AssRe", h.assre()),
            ("AssPr", h.asspr()),
            ("MOTA", s.mota),
            ("MOTP", s.motp),
            ("IDF1", s.idf1),
            ("IDR", s.idr),
            ("IDP", s.idp),
            ("IDSW", s.id_switches as f64),
            ("Frag", s.fragmentations as f64),
            ("CLR_TP", s.clear.tp as f64),
            ("CLR_FN", s.clear.fn_ as f64),
            ("CLR_FP", s.clear.fp as f64),
            ("MT", s.clear.mt as f64),
            ("PT", s.clear.pt as f64),
            ("ML", s.clear.ml as f64),
            ("IDTP", s.identity.idtp as f64),
            ("IDFN", s.identity.idfn as f64),
            ("IDFP", s.identity.idfp as f64),
        ] {
            close(name, &case, ours, &te[name]);
        }
        let alphas = te["alphas"].as_array().unwrap();
        assert_eq!(alphas.len(), ALPHAS.len());
        for (a, v) in alphas.iter().enumerate() {
            assert_eq!(ALPHAS[a], v.as_f64().unwrap(), "alpha {a} computed as numpy's arange");
            close("HOTA_per_alpha", &case, h.hota_per_alpha()[a], &te["HOTA_per_alpha"][a]);
            close("AssA_per_alpha", &case, h.assa_per_alpha[a], &te["AssA_per_alpha"][a]);
            close("LocA_per_alpha", &case, h.loca_per_alpha[a], &te["LocA_per_alpha"][a]);
            close("HOTA_TP_per_alpha", &case, h.tp[a], &te["HOTA_TP_per_alpha"][a]);
        }

        // py-motmetrics: equal except where the case's notes name a difference between the
        // tools (previous-match rule, fragments across absences, MT at exactly 80 %).
        let mm = &want["motmetrics"];
        let differs = want["notes"][0].as_str().filter(|n| n.starts_with("Differences:")).unwrap_or("");
        for (name, ours, key) in [
            ("MOTA", s.mota, "mota"),
            ("IDF1", s.idf1, "idf1"),
            ("IDSW", s.id_switches as f64, "num_switches"),
            ("Frag", s.fragmentations as f64, "num_fragmentations"),
            ("IDTP", s.identity.idtp as f64, "idtp"),
        ] {
            if !differs.contains(name) {
                let t = mm[key].as_f64().unwrap();
                // motmetrics shifts boxes by one pixel on loading: IoUs differ by ~1e-15.
                assert!((ours - t).abs() <= 1e-9, "{case}: {name} ours {ours} vs motmetrics {t}");
            }
        }
        if !differs.contains("MOTP") {
            let t = 1.0 - mm["motp"].as_f64().unwrap();
            assert!((s.motp - t).abs() <= 1e-9, "{case}: MOTP ours {} vs 1 - motmetrics motp {t}", s.motp);
        }
    }
}
