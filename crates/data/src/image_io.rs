//! Decoding images (1..N bands, 8 to 64 bit) and class-index masks.
//!
//! PNG and JPEG go through the `image` crate; TIFF goes to the `tiff` crate directly because
//! `image` refuses more than four samples per pixel and multispectral tiles have six or more.
//! Masks are PNG through the `png` crate directly, so that a palette PNG yields its indices
//! rather than the colours `image` would expand them to.

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tiff::decoder::{Decoder as TiffDecoder, DecodingResult, Limits as TiffLimits};

use crate::DataError;
use crate::files::ext_lower;

/// A decoded image: raw sample values (0..255, 0..65535, ...) as `f32`, band-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Number of bands (channels).
    pub bands: u32,
    /// Bits per sample in the file (8, 16, 32 or 64).
    pub bit_depth: u8,
    /// `bands * height * width` values in CHW order.
    pub data: Vec<f32>,
}

/// A decoded class-index mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `height * width` class values, row-major.
    pub data: Vec<u32>,
}

/// What validation needs to know about an image, found by decoding all of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageInfo {
    pub width: u32,
    pub height: u32,
    pub bands: u32,
    pub bit_depth: u8,
}

/// Pixel data straight from a decoder, before conversion to `f32` CHW.
enum Raw {
    Dynamic(image::DynamicImage),
    Tiff {
        info: ImageInfo,
        planar: bool,
        data: DecodingResult,
    },
}

impl Raw {
    fn info(&self) -> ImageInfo {
        match self {
            Raw::Dynamic(img) => {
                let color = img.color();
                ImageInfo {
                    width: img.width(),
                    height: img.height(),
                    bands: u32::from(color.channel_count()),
                    bit_depth: u8::try_from(
                        color.bits_per_pixel() / u16::from(color.channel_count()),
                    )
                    .unwrap_or(u8::MAX),
                }
            }
            Raw::Tiff { info, .. } => *info,
        }
    }
}

/// Loads an image of any supported kind: PNG, JPEG or TIFF; 8 or 16 bit (TIFF also 32/64 bit
/// integer or float); gray, RGB, RGBA or N bands.
pub fn load_image(path: &Path) -> Result<Image, DataError> {
    let raw = decode(path)?;
    let info = raw.info();
    let data = match raw {
        Raw::Dynamic(img) => dynamic_to_chw(img),
        Raw::Tiff { planar, data, .. } => tiff_to_chw(&info, planar, data),
    };
    Ok(Image {
        width: info.width,
        height: info.height,
        bands: info.bands,
        bit_depth: info.bit_depth,
        data,
    })
}

/// Decodes all of an image (a truncated file fails here) and returns its shape.
pub(crate) fn probe_image(path: &Path) -> Result<ImageInfo, DataError> {
    Ok(decode(path)?.info())
}

fn decode(path: &Path) -> Result<Raw, DataError> {
    // One read serves the format sniffing, the JPEG end check and the decoder.
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        return decode_tiff(path, Cursor::new(bytes));
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        check_jpeg_end(path, &bytes)?;
    }
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    // Unknown content: let the extension pick the decoder, whose complaint is more telling
    // ("invalid png signature") than "unsupported format".
    if reader.format().is_none()
        && let Ok(f) = image::ImageFormat::from_path(path)
    {
        reader.set_format(f);
    }
    let img = reader.decode().map_err(|e| decode_err(path, e))?;
    Ok(Raw::Dynamic(img))
}

/// The JPEG decoder may fill a truncated scan with grey and report success (it does when the
/// cut falls late in the file), so a cut-off file is caught by its missing end-of-image marker.
fn check_jpeg_end(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    // Some writers pad the file after the marker; look past trailing zeros and newlines.
    let end = bytes
        .iter()
        .rposition(|&b| !matches!(b, 0 | b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    if end < 2 || bytes[end - 2..end] != [0xFF, 0xD9] {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: "truncated jpeg: no end-of-image marker".to_owned(),
        });
    }
    Ok(())
}

fn decode_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    // Our messages end without a period; some decoders' do not.
    let reason = e.to_string();
    DataError::Decode {
        path: path.to_path_buf(),
        reason: reason.trim_end_matches('.').to_owned(),
    }
}

fn open_tiff<R: Read + Seek>(path: &Path, r: R) -> Result<TiffDecoder<R>, DataError> {
    let mut limits = TiffLimits::default();
    // The default 256 MiB cap is below a single large orthophoto.
    limits.decoding_buffer_size = 4 << 30;
    TiffDecoder::new(r)
        .map(|d| d.with_limits(limits))
        .map_err(|e| decode_err(path, e))
}

fn decode_tiff<R: Read + Seek>(path: &Path, r: R) -> Result<Raw, DataError> {
    use tiff::ColorType as C;
    let mut dec = open_tiff(path, r)?;
    let (width, height) = dec.dimensions().map_err(|e| decode_err(path, e))?;
    let color = dec.colortype().map_err(|e| decode_err(path, e))?;
    let bands: u32 = match color {
        C::Gray(_) | C::Palette(_) => 1,
        C::GrayA(_) => 2,
        C::RGB(_) | C::YCbCr(_) | C::Lab(_) => 3,
        C::RGBA(_) | C::CMYK(_) => 4,
        C::CMYKA(_) => 5,
        C::Multiband { num_samples, .. } => u32::from(num_samples),
        other => {
            return Err(DataError::Unsupported {
                path: path.to_path_buf(),
                reason: format!("tiff colour type {other:?}"),
            });
        }
    };
    let bit_depth = color.bit_depth();
    if !matches!(bit_depth, 8 | 16 | 32 | 64) {
        return Err(DataError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("{bit_depth}-bit tiff samples (8, 16, 32 and 64 are read)"),
        });
    }
    let mut data = DecodingResult::U8(Vec::new());
    let layout = dec
        .read_image_to_buffer(&mut data)
        .map_err(|e| decode_err(path, e))?;
    let info = ImageInfo {
        width,
        height,
        bands,
        bit_depth,
    };
    let expected = width as usize * height as usize * bands as usize;
    let got = decoded_len(&data);
    if got != expected {
        return Err(DataError::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "decoded {got} samples, expected {width}x{height}x{bands} = {expected}{}",
                if layout.planes > 1 {
                    " (planar tiff too large to read at once)"
                } else {
                    ""
                }
            ),
        });
    }
    Ok(Raw::Tiff {
        info,
        planar: layout.planes > 1,
        data,
    })
}

fn decoded_len(data: &DecodingResult) -> usize {
    match data {
        DecodingResult::U8(v) => v.len(),
        DecodingResult::U16(v) => v.len(),
        DecodingResult::U32(v) => v.len(),
        DecodingResult::U64(v) => v.len(),
        DecodingResult::F16(v) => v.len(),
        DecodingResult::F32(v) => v.len(),
        DecodingResult::F64(v) => v.len(),
        DecodingResult::I8(v) => v.len(),
        DecodingResult::I16(v) => v.len(),
        DecodingResult::I32(v) => v.len(),
        DecodingResult::I64(v) => v.len(),
    }
}

/// Lossy widening to `f32`; exact for 8- and 16-bit samples, which is what imagery holds.
trait Sample: Copy {
    fn to_f32(self) -> f32;
}

macro_rules! sample_as {
    ($($t:ty),*) => {$(
        impl Sample for $t {
            #[allow(clippy::cast_lossless)]
            fn to_f32(self) -> f32 {
                self as f32
            }
        }
    )*};
}
sample_as!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

/// HWC (pixel-interleaved) to CHW.
fn hwc_to_chw<T: Sample>(src: &[T], pixels: usize, bands: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; pixels * bands];
    for (p, px) in src.chunks_exact(bands).enumerate() {
        for (b, v) in px.iter().enumerate() {
            out[b * pixels + p] = v.to_f32();
        }
    }
    out
}

fn tiff_to_chw(info: &ImageInfo, planar: bool, data: DecodingResult) -> Vec<f32> {
    let pixels = info.width as usize * info.height as usize;
    let bands = info.bands as usize;
    macro_rules! conv {
        ($v:expr) => {
            if planar || bands == 1 {
                $v.iter().map(|x| x.to_f32()).collect()
            } else {
                hwc_to_chw(&$v, pixels, bands)
            }
        };
    }
    match data {
        DecodingResult::U8(v) => conv!(v),
        DecodingResult::U16(v) => conv!(v),
        DecodingResult::U32(v) => conv!(v),
        DecodingResult::U64(v) => conv!(v),
        DecodingResult::F16(v) => {
            let v: Vec<f32> = v.into_iter().map(f32::from).collect();
            conv!(v)
        }
        DecodingResult::F32(v) => conv!(v),
        DecodingResult::F64(v) => conv!(v),
        DecodingResult::I8(v) => conv!(v),
        DecodingResult::I16(v) => conv!(v),
        DecodingResult::I32(v) => conv!(v),
        DecodingResult::I64(v) => conv!(v),
    }
}

fn dynamic_to_chw(img: image::DynamicImage) -> Vec<f32> {
    use image::DynamicImage as D;
    let pixels = img.width() as usize * img.height() as usize;
    let bands = usize::from(img.color().channel_count());
    match img {
        D::ImageLuma8(i) => hwc_to_chw(i.as_raw(), pixels, bands),
        D::ImageLumaA8(i) => hwc_to_chw(i.as_raw(), pixels, bands),
        D::ImageRgb8(i) => hwc_to_chw(i.as_raw(), pixels, bands),
        D::ImageRgba8(i) => hwc_to_chw(i.as_raw(), pixels, bands),
        D::ImageLuma16(i) => hwc_to_chw(i.as_raw(), pixels, bands),
        D::ImageLumaA16(i) => hwc_to_chw(i.as_raw(), pixels, bands),
        D::ImageRgb16(i) => hwc_to_chw(i.as_raw(), pixels, bands),
        D::ImageRgba16(i) => hwc_to_chw(i.as_raw(), pixels, bands),
        D::ImageRgb32F(i) => hwc_to_chw(i.as_raw(), pixels, bands),
        D::ImageRgba32F(i) => hwc_to_chw(i.as_raw(), pixels, bands),
        // `DynamicImage` is non-exhaustive; a future variant is read through RGBA float.
        other => {
            let i = other.to_rgba32f();
            hwc_to_chw(i.as_raw(), pixels, 4)
        }
    }
}

/// Loads a single-channel class-index mask: PNG (gray or palette, 1 to 16 bit) or TIFF
/// (unsigned 8, 16 or 32 bit).
pub fn load_mask(path: &Path) -> Result<Mask, DataError> {
    match ext_lower(path).as_str() {
        "png" => load_png_mask(path),
        "tif" | "tiff" => load_tiff_mask(path),
        other => Err(DataError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("mask files must be png or tiff, not '{other}'"),
        }),
    }
}

fn load_png_mask(path: &Path) -> Result<Mask, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut dec =
        png::Decoder::new_with_limits(BufReader::new(file), png::Limits { bytes: usize::MAX });
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info().map_err(|e| decode_err(path, e))?;
    let (color, depth) = reader.output_color_type();
    if !matches!(color, png::ColorType::Grayscale | png::ColorType::Indexed) {
        return Err(DataError::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "a mask needs one channel, this png is {color:?} with {} channels",
                color.samples()
            ),
        });
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| DataError::Unsupported {
            path: path.to_path_buf(),
            reason: "image too large".to_owned(),
        })?;
    let mut buf = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| decode_err(path, e))?;
    let (width, height) = (frame.width, frame.height);
    let w = width as usize;
    let mut data = Vec::with_capacity(w * height as usize);
    for row in buf[..frame.buffer_size()].chunks_exact(frame.line_size) {
        match depth {
            png::BitDepth::Sixteen => data.extend(
                row.chunks_exact(2)
                    .take(w)
                    .map(|b| u32::from(u16::from_be_bytes([b[0], b[1]]))),
            ),
            png::BitDepth::Eight => data.extend(row.iter().take(w).map(|&b| u32::from(b))),
            packed => {
                let bits = packed as usize;
                let per_byte = 8 / bits;
                let low = (1u8 << bits) - 1;
                data.extend((0..w).map(|x| {
                    let byte = row[x / per_byte];
                    let shift = 8 - bits * (x % per_byte + 1);
                    u32::from((byte >> shift) & low)
                }));
            }
        }
    }
    Ok(Mask {
        width,
        height,
        data,
    })
}

fn load_tiff_mask(path: &Path) -> Result<Mask, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let Raw::Tiff { info, data, .. } = decode_tiff(path, BufReader::new(file))? else {
        return Err(DataError::Unsupported {
            path: path.to_path_buf(),
            reason: "not a tiff".to_owned(),
        });
    };
    if info.bands != 1 {
        return Err(DataError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("a mask needs one band, this tiff has {}", info.bands),
        });
    }
    let negative = || DataError::Unsupported {
        path: path.to_path_buf(),
        reason: "mask has negative values".to_owned(),
    };
    let data: Vec<u32> = match data {
        DecodingResult::U8(v) => v.into_iter().map(u32::from).collect(),
        DecodingResult::U16(v) => v.into_iter().map(u32::from).collect(),
        DecodingResult::U32(v) => v,
        DecodingResult::I8(v) => v
            .into_iter()
            .map(|x| u32::try_from(x).map_err(|_| negative()))
            .collect::<Result<_, _>>()?,
        DecodingResult::I16(v) => v
            .into_iter()
            .map(|x| u32::try_from(x).map_err(|_| negative()))
            .collect::<Result<_, _>>()?,
        DecodingResult::I32(v) => v
            .into_iter()
            .map(|x| u32::try_from(x).map_err(|_| negative()))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(DataError::Unsupported {
                path: path.to_path_buf(),
                reason: "mask samples must be integers of at most 32 bits".to_owned(),
            });
        }
    };
    Ok(Mask {
        width: info.width,
        height: info.height,
        data,
    })
}
