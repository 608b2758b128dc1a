//! Reading a scene a band of rows at a time, so that prediction over a raster of any size
//! costs one band of rows, not the raster.
//!
//! A TIFF is read strip by strip or tile by tile (the `tiff` crate decodes each chunk on its
//! own, whatever its compression); the samples of the rows asked for are copied out of the
//! chunks that hold them. Other formats, and TIFFs stored as a few huge chunks (one strip for
//! the whole raster), have no partial reads: they are decoded whole, within the limits of
//! [`crate::load_raw_image`].

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use tiff::decoder::{ChunkType, Decoder as TiffDecoder, DecodingResult};
use tiff::tags::{PlanarConfiguration, Tag};

use crate::DataError;
use crate::image_io::{
    MAX_DECODED_BYTES, RawImage, decode_err, decoded_len, load_raw_image, open_tiff, tiff_shape,
};

/// The most pixels a scene read band by band may have: 2^34, about 131072 x 131072. Past
/// it a header is taken for a mistake rather than a scene.
pub const MAX_SCENE_PIXELS: u64 = 1 << 34;

/// A TIFF whose chunks (strips or tiles) are larger than this is decoded whole: reading it
/// band by band would decode each huge chunk again for every band of rows.
const MAX_CHUNK_BYTES: u64 = 64 << 20;

/// An image read a band of rows at a time (see the module documentation).
#[derive(Debug)]
pub struct SceneReader {
    nodata: Option<f64>,
    path: PathBuf,
    width: u32,
    height: u32,
    bands: u32,
    bit_depth: u8,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// Decoded whole.
    Whole(RawImage),
    /// Read chunk by chunk.
    Chunks(Box<Chunked>),
    /// Read through GDAL, a band of rows at a time.
    #[cfg(feature = "gdal")]
    Gdal(Box<gdal_rows::GdalRows>),
}

#[derive(Debug)]
pub(crate) struct Chunked {
    dec: TiffDecoder<BufReader<File>>,
    planar: bool,
    chunk_w: u32,
    chunk_h: u32,
    /// Chunks across the image (1 for strips).
    across: u32,
    /// Chunks per band plane (all chunks when not planar).
    per_plane: u32,
    /// Tiles rather than strips.
    tiled: bool,
    /// Image height.
    height: u32,
    /// The rows held, `(first, count)`, and their samples.
    held: Option<(usize, usize)>,
    block: RawImage,
}

/// Rows `row0..row0 + image.height` of a scene, as stored.
#[derive(Debug, Clone, Copy)]
pub struct RowBlock<'a> {
    /// The rows' samples, full width.
    pub image: &'a RawImage,
    /// The scene row of the block's first row.
    pub row0: usize,
}

impl RowBlock<'_> {
    /// Writes band `band` of scene row `y`, pixels `x0..x0 + out.len()`, into `out` as `f32`
    /// (see [`RawImage::band_row`]).
    ///
    /// # Panics
    /// When the row is not in the block, or the band or span lies outside the image.
    pub fn band_row(&self, band: usize, y: usize, x0: usize, out: &mut [f32]) {
        self.image.band_row(band, y - self.row0, x0, out);
    }
}

impl SceneReader {
    /// Opens `path`: a TIFF in small enough chunks for reading band by band, anything else
    /// decoded whole (see [`crate::load_raw_image`]'s limits).
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let mut magic = [0u8; 4];
        {
            use std::io::Read;
            let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
            let n = f.read(&mut magic).map_err(|e| DataError::io(path, e))?;
            if n < 4 {
                return Self::whole(path);
            }
        }
        if !(magic.starts_with(b"II*\0") || magic.starts_with(b"MM\0*")) {
            #[cfg(feature = "gdal")]
            if !matches!(
                crate::files::ext_lower(path).as_str(),
                "png" | "jpg" | "jpeg"
            ) {
                return gdal_rows::open(path);
            }
            return Self::whole(path);
        }
        let file = BufReader::new(File::open(path).map_err(|e| DataError::io(path, e))?);
        let mut dec = open_tiff(path, file)?;
        let (width, height, bands, bit_depth) = tiff_shape(path, &mut dec)?;
        let nodata = match dec
            .find_tag(Tag::Unknown(crate::georef::GDAL_NODATA))
            .map_err(|e| decode_err(path, e))?
        {
            Some(tiff::decoder::ifd::Value::Ascii(text)) => {
                let text = text.trim_end_matches('\0').trim();
                Some(text.parse::<f64>().map_err(|_| DataError::Decode {
                    path: path.to_owned(),
                    reason: format!("GDAL_NODATA tag `{text}` is not a number"),
                })?)
            }
            _ => None,
        };
        let pixels = u64::from(width) * u64::from(height);
        if pixels > MAX_SCENE_PIXELS {
            return Err(DataError::Unsupported {
                path: path.to_owned(),
                reason: format!(
                    "image too large: {width} x {height} is {pixels} pixels, over the limit of \
                     {MAX_SCENE_PIXELS} for a scene"
                ),
            });
        }
        match Chunked::new(path, dec, (width, height, bands, bit_depth))? {
            chunks if chunks.small_chunks() => Ok(SceneReader {
                nodata,
                path: path.to_owned(),
                width,
                height,
                bands,
                bit_depth,
                source: Source::Chunks(Box::new(chunks)),
            }),
            _ => Ok(SceneReader {
                nodata,
                ..Self::whole(path)?
            }),
        }
    }

    fn whole(path: &Path) -> Result<Self, DataError> {
        let image = load_raw_image(path)?;
        Ok(SceneReader {
            nodata: None,
            path: path.to_owned(),
            width: image.width,
            height: image.height,
            bands: image.bands,
            bit_depth: image.bit_depth,
            source: Source::Whole(image),
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bands.
    pub fn bands(&self) -> u32 {
        self.bands
    }

    /// Bits per sample in the file.
    pub fn bit_depth(&self) -> u8 {
        self.bit_depth
    }

    /// The no-data value of a GeoTIFF (GDAL's `GDAL_NODATA` tag): a pixel whose every band
    /// holds it has no data.
    pub fn nodata(&self) -> Option<f64> {
        self.nodata
    }

    /// Whether the scene is read band by band (`false`: it was decoded whole).
    pub fn streamed(&self) -> bool {
        match self.source {
            Source::Whole(_) => false,
            Source::Chunks(_) => true,
            #[cfg(feature = "gdal")]
            Source::Gdal(_) => true,
        }
    }

    /// Rows `y0..y0 + rows` (clipped to the image), full width: the block already held when
    /// it covers them, else read from the chunks that hold them.
    pub fn rows(&mut self, y0: usize, rows: usize) -> Result<RowBlock<'_>, DataError> {
        let height = self.height as usize;
        let y0 = y0.min(height);
        let rows = rows.min(height - y0);
        match &mut self.source {
            Source::Whole(image) => Ok(RowBlock { image, row0: 0 }),
            #[cfg(feature = "gdal")]
            Source::Gdal(g) => g.rows(&self.path, y0, rows),
            Source::Chunks(c) => {
                if !c
                    .held
                    .is_some_and(|(first, n)| first <= y0 && y0 + rows <= first + n)
                {
                    c.read(&self.path, y0, rows)?;
                }
                let row0 = c.held.map_or(0, |(first, _)| first);
                Ok(RowBlock {
                    image: &c.block,
                    row0,
                })
            }
        }
    }
}

impl Chunked {
    /// A reader of `dec`'s chunks.
    pub(crate) fn new(
        path: &Path,
        mut dec: TiffDecoder<BufReader<File>>,
        (width, height, bands, bit_depth): (u32, u32, u32, u8),
    ) -> Result<Self, DataError> {
        let planar = dec
            .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
            .map_err(|e| decode_err(path, e))?
            == Some(PlanarConfiguration::Planar.to_u16());
        let (chunk_w, chunk_h) = dec.chunk_dimensions();
        if chunk_w == 0 || chunk_h == 0 {
            return Err(DataError::Decode {
                path: path.to_owned(),
                reason: format!("strips or tiles of {chunk_w} x {chunk_h} pixels"),
            });
        }
        let (across, chunks) = match dec.get_chunk_type() {
            ChunkType::Strip => (1, dec.strip_count().map_err(|e| decode_err(path, e))?),
            ChunkType::Tile => (
                width.div_ceil(chunk_w),
                dec.tile_count().map_err(|e| decode_err(path, e))?,
            ),
        };
        let per_plane = across * height.div_ceil(chunk_h);
        let want = per_plane * if planar { bands } else { 1 };
        if chunks != want {
            return Err(DataError::Decode {
                path: path.to_owned(),
                reason: format!("{chunks} strips or tiles where the image needs {want}"),
            });
        }
        let tiled = dec.get_chunk_type() == ChunkType::Tile;
        Ok(Chunked {
            dec,
            planar,
            chunk_w,
            chunk_h,
            across,
            per_plane,
            tiled,
            height,
            held: None,
            block: RawImage {
                width,
                height: 0,
                bands,
                bit_depth,
                planar,
                data: DecodingResult::U8(Vec::new()),
            },
        })
    }

    /// Whether each chunk is small enough to read band by band; a raster stored as a few
    /// huge chunks would have each decoded again for every band of rows.
    pub(crate) fn small_chunks(&self) -> bool {
        let samples = if self.planar {
            1
        } else {
            u64::from(self.block.bands)
        };
        u64::from(self.chunk_w)
            * u64::from(self.chunk_h)
            * samples
            * u64::from(self.block.bit_depth / 8)
            <= MAX_CHUNK_BYTES
    }

    /// Whether the image is tiled with band planes stored apart: what the `tiff` crate's
    /// whole-image decoding cannot read (it mistakes the padding of the last row of tiles in
    /// every plane but the first, and panics).
    pub(crate) fn planar_tiles(&self) -> bool {
        self.planar && self.tiled
    }

    /// The decoder back, for a whole-image decode.
    pub(crate) fn into_decoder(self) -> TiffDecoder<BufReader<File>> {
        self.dec
    }

    /// All the image's rows, read chunk by chunk.
    pub(crate) fn read_all(mut self, path: &Path) -> Result<RawImage, DataError> {
        let height = self.height as usize;
        self.read(path, 0, height)?;
        Ok(self.block)
    }

    /// Reads rows `y0..y0 + rows` into the block.
    fn read(&mut self, path: &Path, y0: usize, rows: usize) -> Result<(), DataError> {
        let width = self.block.width as usize;
        let bands = self.block.bands as usize;
        let len = width * rows * bands;
        let bytes = len as u64 * u64::from(self.block.bit_depth / 8);
        if bytes > MAX_DECODED_BYTES {
            return Err(DataError::Unsupported {
                path: path.to_owned(),
                reason: format!(
                    "{rows} rows of {width} x {bands} bands take {} MiB, over the limit of {} MiB",
                    bytes >> 20,
                    MAX_DECODED_BYTES >> 20
                ),
            });
        }
        self.held = None;
        let (cw, ch) = (self.chunk_w as usize, self.chunk_h as usize);
        let planes = if self.planar { bands } else { 1 };
        let first_chunk_row = y0 / ch;
        let last_chunk_row = (y0 + rows).saturating_sub(1) / ch;
        let mut data: Option<DecodingResult> = None;
        for plane in 0..planes {
            for chunk_row in first_chunk_row..=last_chunk_row {
                for chunk_col in 0..self.across as usize {
                    let index = plane as u32 * self.per_plane
                        + (chunk_row as u32) * self.across
                        + chunk_col as u32;
                    let chunk = self
                        .dec
                        .read_chunk(index)
                        .map_err(|e| decode_err(path, e))?;
                    let (dw, dh) = self.dec.chunk_data_dimensions(index);
                    let (dw, dh) = (dw as usize, dh as usize);
                    let per_pixel = if self.planar { 1 } else { bands };
                    if decoded_len(&chunk) < dw * dh * per_pixel {
                        return Err(DataError::Decode {
                            path: path.to_owned(),
                            reason: format!("strip or tile {index} holds too few samples"),
                        });
                    }
                    let dst = data.get_or_insert_with(|| zeroed_like(&chunk, len));
                    let place = Place {
                        x0: chunk_col * cw,
                        chunk_y0: chunk_row * ch,
                        w: dw.min(width.saturating_sub(chunk_col * cw)),
                        h: dh,
                        chunk_w: dw,
                        y0,
                        rows,
                        width,
                        per_pixel,
                        plane,
                    };
                    copy_chunk(dst, &chunk, &place).ok_or_else(|| DataError::Decode {
                        path: path.to_owned(),
                        reason: format!("strip or tile {index} has another sample type"),
                    })?;
                }
            }
        }
        self.block.height = rows as u32;
        self.block.data = data.unwrap_or(DecodingResult::U8(vec![0; len]));
        self.held = Some((y0, rows));
        Ok(())
    }
}

/// Where a chunk's samples go in a block.
struct Place {
    /// Chunk's left edge in the image.
    x0: usize,
    /// Chunk's top edge in the image.
    chunk_y0: usize,
    /// Columns of the chunk inside the image.
    w: usize,
    /// Rows of the chunk's data.
    h: usize,
    /// The chunk's row length in pixels.
    chunk_w: usize,
    /// The block's first image row.
    y0: usize,
    /// The block's rows.
    rows: usize,
    /// Image width.
    width: usize,
    /// Samples per pixel in the chunk (1 when planar).
    per_pixel: usize,
    /// Band plane the chunk belongs to (planar).
    plane: usize,
}

fn zeroed_like(like: &DecodingResult, len: usize) -> DecodingResult {
    match like {
        DecodingResult::U8(_) => DecodingResult::U8(vec![0; len]),
        DecodingResult::U16(_) => DecodingResult::U16(vec![0; len]),
        DecodingResult::U32(_) => DecodingResult::U32(vec![0; len]),
        DecodingResult::U64(_) => DecodingResult::U64(vec![0; len]),
        DecodingResult::F16(_) => DecodingResult::F16(vec![Default::default(); len]),
        DecodingResult::F32(_) => DecodingResult::F32(vec![0.0; len]),
        DecodingResult::F64(_) => DecodingResult::F64(vec![0.0; len]),
        DecodingResult::I8(_) => DecodingResult::I8(vec![0; len]),
        DecodingResult::I16(_) => DecodingResult::I16(vec![0; len]),
        DecodingResult::I32(_) => DecodingResult::I32(vec![0; len]),
        DecodingResult::I64(_) => DecodingResult::I64(vec![0; len]),
    }
}

/// Copies the rows of a chunk that fall in the block; `None` when the sample types differ.
fn copy_chunk(dst: &mut DecodingResult, src: &DecodingResult, p: &Place) -> Option<()> {
    fn copy<T: Copy>(dst: &mut [T], src: &[T], p: &Place) {
        let top = p.chunk_y0.max(p.y0);
        let bottom = (p.chunk_y0 + p.h).min(p.y0 + p.rows);
        for y in top..bottom {
            let s = ((y - p.chunk_y0) * p.chunk_w) * p.per_pixel;
            let s = &src[s..s + p.w * p.per_pixel];
            let row = y - p.y0;
            let d = if p.per_pixel == 1 {
                // One sample per pixel: band planes one after another.
                p.plane * p.rows * p.width + row * p.width + p.x0
            } else {
                (row * p.width + p.x0) * p.per_pixel
            };
            dst[d..d + s.len()].copy_from_slice(s);
        }
    }
    match (dst, src) {
        (DecodingResult::U8(d), DecodingResult::U8(s)) => copy(d, s, p),
        (DecodingResult::U16(d), DecodingResult::U16(s)) => copy(d, s, p),
        (DecodingResult::U32(d), DecodingResult::U32(s)) => copy(d, s, p),
        (DecodingResult::U64(d), DecodingResult::U64(s)) => copy(d, s, p),
        (DecodingResult::F16(d), DecodingResult::F16(s)) => copy(d, s, p),
        (DecodingResult::F32(d), DecodingResult::F32(s)) => copy(d, s, p),
        (DecodingResult::F64(d), DecodingResult::F64(s)) => copy(d, s, p),
        (DecodingResult::I8(d), DecodingResult::I8(s)) => copy(d, s, p),
        (DecodingResult::I16(d), DecodingResult::I16(s)) => copy(d, s, p),
        (DecodingResult::I32(d), DecodingResult::I32(s)) => copy(d, s, p),
        (DecodingResult::I64(d), DecodingResult::I64(s)) => copy(d, s, p),
        _ => return None,
    }
    Some(())
}

/// Scenes in the formats GDAL reads (the `gdal` feature).
#[cfg(feature = "gdal")]
mod gdal_rows {
    use std::path::Path;

    use tiff::decoder::DecodingResult;

    use super::{RowBlock, SceneReader, Source};
    use crate::DataError;
    use crate::image_io::RawImage;

    pub(super) struct GdalRows {
        ds: gdal::Dataset,
        held: Option<(usize, usize)>,
        block: RawImage,
    }

    impl std::fmt::Debug for GdalRows {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("GdalRows")
                .field("held", &self.held)
                .finish_non_exhaustive()
        }
    }

    fn err(path: &Path, e: gdal::errors::GdalError) -> DataError {
        DataError::Decode {
            path: path.to_owned(),
            reason: format!("GDAL: {e}"),
        }
    }

    /// Opens `path` with GDAL; its no-data value is band 1's.
    pub(super) fn open(path: &Path) -> Result<SceneReader, DataError> {
        let ds = gdal::Dataset::open(path).map_err(|e| err(path, e))?;
        let (w, h) = ds.raster_size();
        let bands = ds.raster_count();
        if bands == 0 {
            return Err(DataError::Unsupported {
                path: path.to_owned(),
                reason: "GDAL finds no raster band".into(),
            });
        }
        let band = ds.rasterband(1).map_err(|e| err(path, e))?;
        let bit_depth = band.band_type().bits();
        let nodata = band.no_data_value();
        let (width, height) = (
            u32::try_from(w).map_err(|_| too_large(path))?,
            u32::try_from(h).map_err(|_| too_large(path))?,
        );
        if u64::from(width) * u64::from(height) > super::MAX_SCENE_PIXELS {
            return Err(too_large(path));
        }
        Ok(SceneReader {
            nodata,
            path: path.to_owned(),
            width,
            height,
            bands: bands as u32,
            bit_depth,
            source: Source::Gdal(Box::new(GdalRows {
                ds,
                held: None,
                block: RawImage {
                    width,
                    height: 0,
                    bands: bands as u32,
                    bit_depth,
                    planar: true,
                    data: DecodingResult::F32(Vec::new()),
                },
            })),
        })
    }

    fn too_large(path: &Path) -> DataError {
        DataError::Unsupported {
            path: path.to_owned(),
            reason: format!("image too large: over {} pixels", super::MAX_SCENE_PIXELS),
        }
    }

    impl GdalRows {
        /// Rows `y0..y0 + rows`, every band, as `f32` band planes.
        pub(super) fn rows(
            &mut self,
            path: &Path,
            y0: usize,
            rows: usize,
        ) -> Result<RowBlock<'_>, DataError> {
            if !self
                .held
                .is_some_and(|(first, n)| first <= y0 && y0 + rows <= first + n)
            {
                let width = self.block.width as usize;
                let mut data = Vec::with_capacity(width * rows * self.block.bands as usize);
                for b in 1..=self.block.bands as usize {
                    let band = self.ds.rasterband(b).map_err(|e| err(path, e))?;
                    let buf = band
                        .read_as::<f32>((0, y0 as isize), (width, rows), (width, rows), None)
                        .map_err(|e| err(path, e))?;
                    data.extend_from_slice(buf.data());
                }
                self.block.height = rows as u32;
                self.block.data = DecodingResult::F32(data);
                self.held = Some((y0, rows));
            }
            let row0 = self.held.map_or(0, |(first, _)| first);
            Ok(RowBlock {
                image: &self.block,
                row0,
            })
        }
    }

    /// The georeference GDAL finds for `path` (its transform, and the CRS's EPSG code when
    /// GDAL knows one, and its WKT), or `None` without a transform.
    pub(crate) fn georef(path: &Path) -> Option<crate::GeoRef> {
        let ds = gdal::Dataset::open(path).ok()?;
        let transform = ds.geo_transform().ok()?;
        let mut srs = ds.spatial_ref().ok();
        if let Some(s) = &mut srs {
            // A CRS given by its parameters (an ENVI map info, say) gets its EPSG code when
            // GDAL recognises it; failing that it stays WKT.
            let _ = s.auto_identify_epsg();
        }
        let epsg = srs.as_ref().and_then(|s| {
            (s.auth_name().as_deref() == Some("EPSG"))
                .then(|| s.auth_code().ok())
                .flatten()
                .and_then(|c| u32::try_from(c).ok())
        });
        let wkt = srs.and_then(|s| s.to_wkt().ok());
        Some(crate::GeoRef {
            transform,
            epsg,
            wkt,
        })
    }
}

#[cfg(feature = "gdal")]
pub(crate) use gdal_rows::georef as gdal_georef;
