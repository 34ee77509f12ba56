//! The status screen on the host: drawn into a framebuffer, written as a PNG (each display
//! pixel as a `scale`×`scale` square, lit pixels in the colour of an OLED).

use std::path::Path;

use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::*;

use crate::display::{self, Status, HEIGHT, WIDTH};
use crate::error::BridgeError;

/// A 128×64 one-bit framebuffer.
pub struct Framebuffer {
    pixels: Vec<bool>,
}

impl Default for Framebuffer {
    fn default() -> Self {
        Framebuffer { pixels: vec![false; (WIDTH * HEIGHT) as usize] }
    }
}

impl Framebuffer {
    pub fn get(&self, x: u32, y: u32) -> bool {
        self.pixels[(y * WIDTH + x) as usize]
    }

    pub fn to_image(&self, scale: u32) -> image::RgbImage {
        let (on, off) = (image::Rgb([120, 220, 255]), image::Rgb([8, 12, 20]));
        image::RgbImage::from_fn(
            WIDTH * scale,
            HEIGHT * scale,
            |x, y| if self.get(x / scale, y / scale) { on } else { off },
        )
    }
}

impl OriginDimensions for Framebuffer {
    fn size(&self) -> Size {
        Size::new(WIDTH, HEIGHT)
    }
}

impl DrawTarget for Framebuffer {
    type Color = BinaryColor;
    type Error = core::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<BinaryColor>>>(&mut self, pixels: I) -> Result<(), Self::Error> {
        for Pixel(p, c) in pixels {
            if (0..WIDTH as i32).contains(&p.x) && (0..HEIGHT as i32).contains(&p.y) {
                self.pixels[(p.y as u32 * WIDTH + p.x as u32) as usize] = c.is_on();
            }
        }
        Ok(())
    }
}

pub fn render(status: &Status) -> Framebuffer {
    let mut fb = Framebuffer::default();
    let Ok(()) = display::draw(&mut fb, status);
    fb
}

/// Writes the screen as a PNG, atomically.
pub fn save_png(status: &Status, path: &Path, scale: u32) -> Result<(), BridgeError> {
    let img = render(status).to_image(scale);
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| BridgeError::Input(format!("encoding {}: {e}", path.display())))?;
    Ok(fieldkit_core::fsio::write_atomic(path, &bytes)?)
}
