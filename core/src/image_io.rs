//! Image decoding shared by every stage: size limits against decompression bombs,
//! truncated-JPEG detection, and no panics escaping from a decoder on hostile bytes.

use std::io::Cursor;
use std::path::Path;

use image::{ImageReader, RgbImage};

use crate::error::{CoreError, Result};

/// Largest side we decode. A phone photo is ~8000 px; a PNG header that claims 50,000×50,000
/// is refused before any pixel buffer is allocated.
pub const MAX_SIDE: u32 = 16_384;
/// Upper bound on decoder allocations.
pub const MAX_ALLOC: u64 = 1 << 30;

/// Reads and decodes an image file into RGB8.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| CoreError::io(path, e))?;
    decode_rgb(&bytes).map_err(|msg| CoreError::Image { path: path.to_path_buf(), msg })
}

/// Decodes bytes into RGB8; the error is a message for the caller to attach a name to.
pub fn decode_rgb(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    if is_jpeg(bytes) && jpeg_truncated(bytes) {
        return Err("truncated JPEG (no end-of-image marker)".into());
    }
    let decoded = std::panic::catch_unwind(|| -> std::result::Result<RgbImage, String> {
        let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_SIDE);
        limits.max_image_height = Some(MAX_SIDE);
        limits.max_alloc = Some(MAX_ALLOC);
        reader.limits(limits);
        if reader.format().is_none() {
            return Err("unknown image format (expected JPEG or PNG)".into());
        }
        let img = reader.decode().map_err(|e| e.to_string())?;
        Ok(img.into_rgb8())
    });
    match decoded {
        Ok(r) => r,
        Err(_) => Err("the image decoder crashed on this file".into()),
    }
}

/// Encodes an image (RGB, grey class ids, ...) as PNG and writes it atomically.
pub fn save_png<P>(path: &Path, img: &image::ImageBuffer<P, Vec<P::Subpixel>>) -> Result<()>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
{
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| CoreError::invalid(path, format!("PNG encode: {e}")))?;
    crate::fsio::write_atomic(path, &png)
}

/// Width and height of an image file from its header, without reading the pixel data.
pub fn file_dimensions(path: &Path) -> Result<(u32, u32)> {
    let img_err = |msg: String| CoreError::Image { path: path.to_path_buf(), msg };
    ImageReader::open(path)
        .map_err(|e| CoreError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| CoreError::io(path, e))?
        .into_dimensions()
        .map_err(|e| img_err(e.to_string()))
}

fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8])
}

/// A complete JPEG ends with FFD9 (some writers pad with zeros after it). Decoders often
/// fill a truncated tail with grey instead of failing, so we check explicitly.
fn jpeg_truncated(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0 && b != b'\n' && b != b'\r').map(|i| i + 1).unwrap_or(0);
    end < 4 || bytes[end - 2..end] != [0xFF, 0xD9]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg_bytes() -> Vec<u8> {
        let img = RgbImage::from_fn(32, 24, |x, y| image::Rgb([(x * 8) as u8, (y * 10) as u8, 77]));
        let mut buf = Vec::new();
        img.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Jpeg).unwrap();
        buf
    }

    #[test]
    fn decodes_and_detects_truncation() {
        let b = jpeg_bytes();
        let img = decode_rgb(&b).unwrap();
        assert_eq!(img.dimensions(), (32, 24));
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x.jpg"), &b).unwrap();
        assert_eq!(file_dimensions(&d.path().join("x.jpg")).unwrap(), (32, 24));
        let e = decode_rgb(&b[..b.len() * 2 / 3]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        assert!(decode_rgb(b"").unwrap_err().contains("empty"));
        assert!(decode_rgb(b"hello world, not an image").is_err());
    }

    #[test]
    fn refuses_giant_png_header() {
        // A valid PNG signature + IHDR claiming 50,000 x 50,000 RGB, no pixel data.
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(b"IHDR");
        ihdr.extend_from_slice(&50_000u32.to_be_bytes());
        ihdr.extend_from_slice(&50_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        let crc = crc32(&ihdr);
        png.extend_from_slice(&crc.to_be_bytes());
        let e = decode_rgb(&png).unwrap_err();
        assert!(e.to_lowercase().contains("limit"), "{e}");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
}
