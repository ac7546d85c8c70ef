//! Product images: what a file really is (read from its bytes, never from the name or the
//! declared type), whether it is safe to decode, and its thumbnail.
//!
//! Decompression bombs (a few kilobytes declaring a gigapixel canvas) are refused from the
//! header alone, before any pixel buffer is allocated; the decoder also runs under
//! `image::Limits` as a second line. Everything here is CPU-bound and blocking: callers run it
//! in `spawn_blocking`.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};

/// Longest side accepted, in pixels.
pub const MAX_SIDE: u32 = 10_000;
/// Largest canvas accepted, in pixels (50 megapixels).
pub const MAX_PIXELS: u64 = 50_000_000;
/// Most memory the decoder may allocate (50 megapixels of 16-bit RGBA fit).
pub const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;
/// Longest side of a thumbnail.
pub const THUMBNAIL_SIDE: u32 = 256;

/// Why a file cannot be a product image. Retrying never helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The bytes are no image format at all.
    #[error(
        "not an image: the content matches none of the accepted formats (PNG, JPEG, GIF, WebP)"
    )]
    NotAnImage,
    /// An image format, but not one accepted.
    #[error("unsupported image format {0}: accepted formats are PNG, JPEG, GIF and WebP")]
    UnsupportedFormat(String),
    /// The header declares a canvas too large to decode safely.
    #[error(
        "image too large: {width}x{height} pixels (at most {MAX_SIDE} pixels a side and {} megapixels)",
        MAX_PIXELS / 1_000_000
    )]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// The format is right but the data is broken (or breaks the decoder's limits).
    #[error("the {format} image could not be decoded: {reason}")]
    Undecodable {
        /// The format found.
        format: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
}

/// A checked image and its thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// The format found in the bytes.
    pub format: &'static str,
    /// Width of the original.
    pub width: u32,
    /// Height of the original.
    pub height: u32,
    /// The thumbnail, as PNG.
    pub png: Vec<u8>,
    /// Width of the thumbnail.
    pub thumbnail_width: u32,
    /// Height of the thumbnail.
    pub thumbnail_height: u32,
}

/// The accepted formats, by name.
fn accepted(format: ImageFormat) -> Option<&'static str> {
    match format {
        ImageFormat::Png => Some("png"),
        ImageFormat::Jpeg => Some("jpeg"),
        ImageFormat::Gif => Some("gif"),
        ImageFormat::WebP => Some("webp"),
        _ => None,
    }
}

/// Identifies `bytes`, refuses what is not a safe image of an accepted format, and makes a PNG
/// thumbnail at most [`THUMBNAIL_SIDE`] pixels a side (smaller images keep their size).
pub fn make_thumbnail(bytes: &[u8]) -> Result<Thumbnail, Rejection> {
    let format = image::guess_format(bytes).map_err(|_| Rejection::NotAnImage)?;
    let name = accepted(format)
        .ok_or_else(|| Rejection::UnsupportedFormat(format!("{format:?}").to_lowercase()))?;
    let undecodable = |e: image::ImageError| Rejection::Undecodable {
        format: name,
        reason: e.to_string(),
    };

    // The header alone: no pixel is decoded and nothing large is allocated yet.
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(undecodable)?;
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(Rejection::TooLarge { width, height });
    }

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(undecodable)?;

    let thumbnail = if width <= THUMBNAIL_SIDE && height <= THUMBNAIL_SIDE {
        image
    } else {
        image.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    };
    let png = encode_png(&thumbnail).map_err(undecodable)?;
    Ok(Thumbnail {
        format: name,
        width,
        height,
        thumbnail_width: thumbnail.width(),
        thumbnail_height: thumbnail.height(),
        png,
    })
}

fn encode_png(image: &DynamicImage) -> Result<Vec<u8>, image::ImageError> {
    let mut png = Vec::new();
    image.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use image::{Rgb, RgbImage};
    use orderly::testing::png_bomb;

    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = RgbImage::from_fn(width, height, |x, y| Rgb([x as u8, y as u8, 128]));
        encode_png(&DynamicImage::ImageRgb8(image)).unwrap()
    }

    #[test]
    fn large_images_are_scaled_down_to_fit() {
        let thumbnail = make_thumbnail(&png(1024, 512)).unwrap();
        assert_eq!(thumbnail.format, "png");
        assert_eq!((thumbnail.width, thumbnail.height), (1024, 512));
        assert_eq!(
            (thumbnail.thumbnail_width, thumbnail.thumbnail_height),
            (256, 128)
        );
        let decoded = image::load_from_memory(&thumbnail.png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (256, 128));
    }

    #[test]
    fn small_images_keep_their_size() {
        let thumbnail = make_thumbnail(&png(40, 30)).unwrap();
        assert_eq!(
            (thumbnail.thumbnail_width, thumbnail.thumbnail_height),
            (40, 30)
        );
    }

    #[test]
    fn text_is_not_an_image_whatever_it_is_called() {
        assert_eq!(
            make_thumbnail(b"sku,name\nMUG-1,Mug\n"),
            Err(Rejection::NotAnImage)
        );
    }

    #[test]
    fn other_image_formats_are_refused() {
        let bmp = b"BM\x36\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00";
        assert_eq!(
            make_thumbnail(bmp),
            Err(Rejection::UnsupportedFormat("bmp".into()))
        );
    }

    #[test]
    fn bombs_are_refused_from_the_header() {
        assert_eq!(
            make_thumbnail(&png_bomb(100_000, 100_000)),
            Err(Rejection::TooLarge {
                width: 100_000,
                height: 100_000
            })
        );
        // Each side is allowed, the canvas is not.
        assert_eq!(
            make_thumbnail(&png_bomb(9_000, 9_000)),
            Err(Rejection::TooLarge {
                width: 9_000,
                height: 9_000
            })
        );
    }

    #[test]
    fn a_truncated_image_is_undecodable() {
        let mut bytes = png(64, 64);
        bytes.truncate(bytes.len() / 2);
        assert!(matches!(
            make_thumbnail(&bytes),
            Err(Rejection::Undecodable { format: "png", .. })
        ));
    }
}
