//! Decoding images (1..N bands, 8 to 64 bit) and class-index masks.
//!
//! PNG and JPEG go through the `image` crate; TIFF goes to the `tiff` crate directly because
//! `image` refuses more than four samples per pixel and multispectral tiles have six or more.
//! Masks are PNG through the `png` crate directly, so that a palette PNG yields its indices
//! rather than the colours `image` would expand them to.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
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

/// The most pixels an image or mask may have: about 32768 x 32768. Larger images are
/// refused from their header, before anything is allocated.
pub const MAX_PIXELS: u64 = 1 << 30;

/// The most bytes one decoded image may take, in the decoder's buffer or as `f32` samples.
pub const MAX_DECODED_BYTES: u64 = 4 << 30;

/// Refuses an image whose header declares more than [`MAX_PIXELS`], or whose decoded samples
/// (`bytes_per_sample` each) would take more than [`MAX_DECODED_BYTES`].
fn check_size(
    path: &Path,
    width: u32,
    height: u32,
    bands: u32,
    bytes_per_sample: u64,
) -> Result<(), DataError> {
    let pixels = u64::from(width) * u64::from(height);
    let bytes = pixels
        .saturating_mul(u64::from(bands))
        .saturating_mul(bytes_per_sample);
    let too_large = |what: String| DataError::Unsupported {
        path: path.to_path_buf(),
        reason: format!("image too large: {width} x {height} x {bands} bands {what}"),
    };
    if pixels > MAX_PIXELS {
        return Err(too_large(format!(
            "is {pixels} pixels, over the limit of {MAX_PIXELS}; cut it into tiles"
        )));
    }
    if bytes > MAX_DECODED_BYTES {
        return Err(too_large(format!(
            "takes {} MiB decoded, over the limit of {} MiB; cut it into tiles",
            bytes >> 20,
            MAX_DECODED_BYTES >> 20
        )));
    }
    Ok(())
}

/// An image's samples as the file holds them (not yet widened to `f32`): what inference
/// reads window by window, so a large image costs its file's sample size, not four bytes
/// per sample.
#[derive(Debug)]
pub struct RawImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Number of bands.
    pub bands: u32,
    /// Bits per sample in the file.
    pub bit_depth: u8,
    /// Band-major (`true`) or pixel-interleaved samples.
    pub(crate) planar: bool,
    pub(crate) data: DecodingResult,
}

impl RawImage {
    fn info(&self) -> ImageInfo {
        ImageInfo {
            width: self.width,
            height: self.height,
            bands: self.bands,
            bit_depth: self.bit_depth,
        }
    }

    /// Writes band `band` of row `y`, pixels `x0..x0 + out.len()`, into `out` as `f32` (the
    /// values [`load_image`] gives).
    ///
    /// # Panics
    /// When the band, row or span lies outside the image.
    pub fn band_row(&self, band: usize, y: usize, x0: usize, out: &mut [f32]) {
        let (w, bands) = (self.width as usize, self.bands as usize);
        let plane = w * self.height as usize;
        let n = out.len();
        macro_rules! fill {
            ($v:expr) => {
                if self.planar || bands == 1 {
                    let start = band * plane + y * w + x0;
                    for (o, s) in out.iter_mut().zip(&$v[start..start + n]) {
                        *o = s.to_f32();
                    }
                } else {
                    let start = (y * w + x0) * bands + band;
                    for (o, s) in out.iter_mut().zip($v[start..].iter().step_by(bands)) {
                        *o = s.to_f32();
                    }
                }
            };
        }
        match &self.data {
            DecodingResult::U8(v) => fill!(v),
            DecodingResult::U16(v) => fill!(v),
            DecodingResult::U32(v) => fill!(v),
            DecodingResult::U64(v) => fill!(v),
            DecodingResult::F16(v) => {
                let start = if self.planar || bands == 1 {
                    band * plane + y * w + x0
                } else {
                    (y * w + x0) * bands + band
                };
                let step = if self.planar || bands == 1 { 1 } else { bands };
                for (o, s) in out.iter_mut().zip(v[start..].iter().step_by(step)) {
                    *o = f32::from(*s);
                }
            }
            DecodingResult::F32(v) => fill!(v),
            DecodingResult::F64(v) => fill!(v),
            DecodingResult::I8(v) => fill!(v),
            DecodingResult::I16(v) => fill!(v),
            DecodingResult::I32(v) => fill!(v),
            DecodingResult::I64(v) => fill!(v),
        }
    }

    /// Widens every sample to `f32`, band-major.
    pub fn into_image(self) -> Image {
        let info = self.info();
        let data = tiff_to_chw(&info, self.planar, self.data);
        Image {
            width: info.width,
            height: info.height,
            bands: info.bands,
            bit_depth: info.bit_depth,
            data,
        }
    }
}

/// Loads an image of any supported kind: PNG, JPEG or TIFF; 8 or 16 bit (TIFF also 32/64 bit
/// integer or float); gray, RGB, RGBA or N bands. Images over [`MAX_PIXELS`], or whose `f32`
/// samples would pass [`MAX_DECODED_BYTES`], are refused before decoding.
pub fn load_image(path: &Path) -> Result<Image, DataError> {
    Ok(decode(path, 4)?.into_image())
}

/// Loads an image's samples as the file holds them: [`load_image`] without the widening to
/// `f32`, for images too large to hold as `f32`.
pub fn load_raw_image(path: &Path) -> Result<RawImage, DataError> {
    decode(path, 0)
}

/// Decodes all of an image (a truncated file fails here) and returns its shape.
pub(crate) fn probe_image(path: &Path) -> Result<ImageInfo, DataError> {
    Ok(decode(path, 0)?.info())
}

/// Decodes an image, first checking its declared size, with `f32_bytes` per sample for what
/// the caller will make of it (0: kept as decoded).
fn decode(path: &Path, f32_bytes: u64) -> Result<RawImage, DataError> {
    // The decoders read the file through a buffer: the encoded bytes are never held whole
    // beside the decoded samples.
    let mut file = BufReader::new(File::open(path).map_err(|e| DataError::io(path, e))?);
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(|e| DataError::io(path, e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| DataError::io(path, e))?;
    let magic = &magic[..n];
    if magic.starts_with(b"II*\0") || magic.starts_with(b"MM\0*") {
        return decode_tiff(path, file, f32_bytes);
    }
    if magic.starts_with(&[0xFF, 0xD8, 0xFF]) {
        // The end-of-image marker sits in the file's last bytes (past any padding).
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(|e| DataError::io(path, e))?;
        let tail_len = len.min(64 << 10);
        file.seek(SeekFrom::Start(len - tail_len))
            .map_err(|e| DataError::io(path, e))?;
        let mut tail = Vec::new();
        file.by_ref()
            .take(tail_len)
            .read_to_end(&mut tail)
            .map_err(|e| DataError::io(path, e))?;
        check_jpeg_end(path, &tail)?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| DataError::io(path, e))?;
    }
    let mut reader = image::ImageReader::new(file)
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    // Unknown content: let the extension pick the decoder, whose complaint is more telling
    // ("invalid png signature") than "unsupported format".
    if reader.format().is_none()
        && let Ok(f) = image::ImageFormat::from_path(path)
    {
        reader.set_format(f);
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| decode_err(path, e))?;
    {
        use image::ImageDecoder;
        let (width, height) = decoder.dimensions();
        let color = decoder.color_type();
        let bands = u32::from(color.channel_count());
        let bytes_per_sample = u64::from(color.bytes_per_pixel()) / u64::from(bands.max(1));
        check_size(path, width, height, bands, bytes_per_sample.max(f32_bytes))?;
    }
    let img = image::DynamicImage::from_decoder(decoder).map_err(|e| decode_err(path, e))?;
    Ok(dynamic_to_raw(img))
}

/// The JPEG decoder may fill a truncated scan with grey and report success (it does when the
/// cut falls late in the file), so a cut-off file is caught by its missing end-of-image marker.
/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

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

pub(crate) fn decode_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    // Our messages end without a period; some decoders' do not.
    let reason = e.to_string();
    DataError::Decode {
        path: path.to_path_buf(),
        reason: reason.trim_end_matches('.').to_owned(),
    }
}

pub(crate) fn open_tiff<R: Read + Seek>(path: &Path, r: R) -> Result<TiffDecoder<R>, DataError> {
    let mut limits = TiffLimits::default();
    // The default 256 MiB cap is below a single large orthophoto; the declared size is checked
    // against the same limit before decoding.
    limits.decoding_buffer_size = usize::try_from(MAX_DECODED_BYTES).unwrap_or(usize::MAX);
    TiffDecoder::new(r)
        .map(|d| d.with_limits(limits))
        .map_err(|e| decode_err(path, e))
}

/// A TIFF's width, height, bands and bits per sample, refusing colour types and sample sizes
/// that are not read.
pub(crate) fn tiff_shape<R: Read + Seek>(
    path: &Path,
    dec: &mut TiffDecoder<R>,
) -> Result<(u32, u32, u32, u8), DataError> {
    use tiff::ColorType as C;
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
    Ok((width, height, bands, bit_depth))
}

fn decode_tiff(path: &Path, r: BufReader<File>, f32_bytes: u64) -> Result<RawImage, DataError> {
    let mut dec = open_tiff(path, r)?;
    let shape = tiff_shape(path, &mut dec)?;
    let (width, height, bands, bit_depth) = shape;
    check_size(
        path,
        width,
        height,
        bands,
        u64::from(bit_depth / 8).max(f32_bytes),
    )?;
    // Planar tiles go chunk by chunk: the crate's whole-image path panics on their padding.
    let chunks = crate::scene::Chunked::new(path, dec, shape)?;
    if chunks.planar_tiles() {
        return chunks.read_all(path);
    }
    let mut dec = chunks.into_decoder();
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
    Ok(RawImage {
        width: info.width,
        height: info.height,
        bands: info.bands,
        bit_depth: info.bit_depth,
        planar: layout.planes > 1,
        data,
    })
}

pub(crate) fn decoded_len(data: &DecodingResult) -> usize {
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

fn dynamic_to_raw(img: image::DynamicImage) -> RawImage {
    use image::DynamicImage as D;
    let (width, height) = (img.width(), img.height());
    let color = img.color();
    let bands = u32::from(color.channel_count());
    let bit_depth =
        u8::try_from(color.bits_per_pixel() / u16::from(color.channel_count())).unwrap_or(u8::MAX);
    let (bands, bit_depth, data) = match img {
        D::ImageLuma8(i) => (bands, bit_depth, DecodingResult::U8(i.into_raw())),
        D::ImageLumaA8(i) => (bands, bit_depth, DecodingResult::U8(i.into_raw())),
        D::ImageRgb8(i) => (bands, bit_depth, DecodingResult::U8(i.into_raw())),
        D::ImageRgba8(i) => (bands, bit_depth, DecodingResult::U8(i.into_raw())),
        D::ImageLuma16(i) => (bands, bit_depth, DecodingResult::U16(i.into_raw())),
        D::ImageLumaA16(i) => (bands, bit_depth, DecodingResult::U16(i.into_raw())),
        D::ImageRgb16(i) => (bands, bit_depth, DecodingResult::U16(i.into_raw())),
        D::ImageRgba16(i) => (bands, bit_depth, DecodingResult::U16(i.into_raw())),
        D::ImageRgb32F(i) => (bands, bit_depth, DecodingResult::F32(i.into_raw())),
        D::ImageRgba32F(i) => (bands, bit_depth, DecodingResult::F32(i.into_raw())),
        // `DynamicImage` is non-exhaustive; a future variant is read through RGBA float.
        other => (4, 32, DecodingResult::F32(other.to_rgba32f().into_raw())),
    };
    RawImage {
        width,
        height,
        bands,
        bit_depth,
        planar: false,
        data,
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
    let mut dec = png::Decoder::new_with_limits(
        BufReader::new(file),
        png::Limits {
            bytes: usize::try_from(MAX_DECODED_BYTES).unwrap_or(usize::MAX),
        },
    );
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info().map_err(|e| decode_err(path, e))?;
    let (color, depth) = reader.output_color_type();
    {
        let info = reader.info();
        // The mask is held as u32 class values.
        check_size(path, info.width, info.height, 1, 4)?;
    }
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
    let raw = decode_tiff(path, BufReader::new(file), 4)?;
    let (info, data) = (raw.info(), raw.data);
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
