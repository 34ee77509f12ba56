//! Test-time augmentation built into an exported classifier: the network runs on several
//! views of each image (the flips and turns its training augmentation taught it to treat as
//! the same picture) and the graph averages their logits, so any ONNX runtime serving the
//! file gets the averaged prediction. It costs one forward pass per view.

use serde::{Deserialize, Serialize};

use crate::data::Augment;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Tta {
    /// One view: the image as given.
    #[default]
    None,
    /// The image and its mirror image (2 views).
    Flip,
    /// The 8 symmetries of the square: flips, transposes and quarter turns (top-down tiles).
    D4,
}

/// One view of an `[N, 3, H, W]` image: optionally transposed (H and W swapped) after
/// optionally reversing rows and columns. The 8 combinations are the dihedral group D4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub flip_w: bool,
    pub flip_h: bool,
    pub transpose: bool,
}

impl Tta {
    /// The views the training augmentation `a` made the model see as one picture: all 8
    /// symmetries when it turned images by quarter turns or flipped them vertically (top-down
    /// tiles), the mirror image when it flipped them horizontally, else none.
    pub fn matching(a: &Augment) -> Tta {
        if a.rot90 || a.vflip {
            Tta::D4
        } else if a.hflip {
            Tta::Flip
        } else {
            Tta::None
        }
    }

    pub fn views(self) -> Vec<View> {
        let v = |flip_w, flip_h, transpose| View { flip_w, flip_h, transpose };
        match self {
            Tta::None => vec![v(false, false, false)],
            Tta::Flip => vec![v(false, false, false), v(true, false, false)],
            Tta::D4 => [false, true]
                .into_iter()
                .flat_map(|t| [(false, false), (true, false), (false, true), (true, true)].map(|(w, h)| v(w, h, t)))
                .collect(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tta::None => "none",
            Tta::Flip => "flip",
            Tta::D4 => "d4",
        }
    }

    /// For reports and the card's source line, e.g. "d4 (8 views, logits averaged)".
    pub fn describe(self) -> String {
        match self {
            Tta::None => "none (one view)".into(),
            t => format!("{} ({} views, logits averaged)", t.name(), t.views().len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::AugmentPreset;

    #[test]
    fn views_follow_the_training_symmetries() {
        assert_eq!(Tta::matching(&Augment::preset(AugmentPreset::Topdown)), Tta::D4);
        assert_eq!(Tta::matching(&Augment::preset(AugmentPreset::Standard)), Tta::Flip);
        assert_eq!(Tta::matching(&Augment::preset(AugmentPreset::None)), Tta::None);
        let d4 = Tta::D4.views();
        assert_eq!(d4.len(), 8);
        for (i, a) in d4.iter().enumerate() {
            assert!(d4[i + 1..].iter().all(|b| b != a), "view {a:?} twice");
        }
        assert_eq!(Tta::Flip.views().len(), 2);
        assert_eq!(Tta::None.views(), vec![View { flip_w: false, flip_h: false, transpose: false }]);
    }
}
