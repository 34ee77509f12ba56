//! Image corruptions for robustness evaluation (in the spirit of ImageNet-C): blur, sensor
//! noise, exposure and JPEG compression, each at one fixed, documented severity, seeded by
//! the image index so every run perturbs identically.

use image::codecs::jpeg::JpegEncoder;
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{CoreError, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Perturb {
    /// Gaussian blur, sigma in pixels of a 224 px image (scaled to the image's short side).
    Blur(f32),
    /// Additive Gaussian noise, std as a fraction of the 0..255 range.
    Noise(f32),
    /// Multiply intensities (under 1 darker, over 1 brighter), clipped.
    Brightness(f32),
    /// Re-encode as JPEG at this quality.
    Jpeg(u8),
}

impl Perturb {
    /// The names `--perturb` accepts, at their default severities.
    pub const NAMES: [&'static str; 5] = ["blur", "noise", "dark", "bright", "jpeg"];

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.trim() {
            "blur" => Perturb::Blur(2.0),
            "noise" => Perturb::Noise(0.08),
            "dark" | "brightness" => Perturb::Brightness(0.5),
            "bright" => Perturb::Brightness(1.5),
            "jpeg" => Perturb::Jpeg(15),
            other => {
                return Err(CoreError::Argument(format!(
                    "--perturb '{other}' is not one of {}",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }

    pub fn label(&self) -> String {
        match self {
            Perturb::Blur(s) => format!("blur sigma {s} px @224"),
            Perturb::Noise(s) => format!("gaussian noise std {s}"),
            Perturb::Brightness(f) => format!("brightness x{f}"),
            Perturb::Jpeg(q) => format!("jpeg quality {q}"),
        }
    }

    /// The perturbed copy of `img`; `seed` makes the noise reproducible per image.
    pub fn apply(&self, img: &RgbImage, seed: u64) -> Result<RgbImage> {
        Ok(match *self {
            Perturb::Blur(sigma) => {
                let short = img.width().min(img.height()).max(1) as f32;
                image::imageops::blur(img, sigma * short / 224.0)
            }
            Perturb::Noise(std) => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut out = img.clone();
                for v in out.iter_mut() {
                    // Box-Muller: one normal draw per channel value.
                    let (u1, u2): (f32, f32) = (rng.random::<f32>().max(f32::MIN_POSITIVE), rng.random());
                    let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
                    *v = (*v as f32 + z * std * 255.0).round().clamp(0.0, 255.0) as u8;
                }
                out
            }
            Perturb::Brightness(f) => {
                let mut out = img.clone();
                for v in out.iter_mut() {
                    *v = (*v as f32 * f).round().clamp(0.0, 255.0) as u8;
                }
                out
            }
            Perturb::Jpeg(q) => {
                let mut bytes = Vec::new();
                JpegEncoder::new_with_quality(&mut bytes, q)
                    .encode_image(img)
                    .map_err(|e| CoreError::Argument(format!("jpeg re-encode: {e}")))?;
                crate::image_io::decode_rgb(&bytes).map_err(CoreError::Argument)?
            }
        })
    }
}

/// Parses a comma-separated `--perturb` list.
pub fn parse_list(list: &str) -> Result<Vec<(String, Perturb)>> {
    list.split(',').filter(|s| !s.trim().is_empty()).map(|n| Ok((n.trim().to_string(), Perturb::parse(n)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img() -> RgbImage {
        // Texture (a blur of a linear ramp is the ramp): a coarse checkerboard.
        RgbImage::from_fn(64, 48, |x, y| {
            if (x / 4 + y / 4) % 2 == 0 {
                image::Rgb([40, 50, 40])
            } else {
                image::Rgb([200, 180, 160])
            }
        })
    }

    #[test]
    fn each_changes_the_image_reproducibly() {
        for name in Perturb::NAMES {
            let p = Perturb::parse(name).unwrap();
            let a = p.apply(&img(), 3).unwrap();
            assert_eq!(a.dimensions(), (64, 48), "{name}");
            assert!(a != img(), "{name} left the image unchanged");
            assert!(a == p.apply(&img(), 3).unwrap(), "{name} is not reproducible");
        }
        assert!(Perturb::Noise(0.1).apply(&img(), 1).unwrap() != Perturb::Noise(0.1).apply(&img(), 2).unwrap());
        let dark = Perturb::Brightness(0.5).apply(&img(), 0).unwrap();
        assert_eq!(dark.get_pixel(0, 0).0, [20, 25, 20]);
    }

    #[test]
    fn list_parsing_names_the_bad_entry() {
        assert_eq!(parse_list("blur, jpeg").unwrap().len(), 2);
        assert!(parse_list("blur,fog").unwrap_err().to_string().contains("fog"));
    }
}
