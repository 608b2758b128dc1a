//! Where an image lies on the ground: its georeference read from GeoTIFF tags or from a world
//! file beside it (with the CRS from a `.prj` or a GDAL `.aux.xml`), and a single-band GeoTIFF
//! writer that gives a prediction the same georeference, written row by row.
//!
//! Transforms are kept in GDAL's order and convention: pixel corner `(0, 0)` is the top-left
//! corner of the top-left pixel, and the point at pixel position `(px, py)` lies at
//! `x = t[0] + px * t[1] + py * t[2]`, `y = t[3] + px * t[4] + py * t[5]`.

use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tiff::decoder::Decoder as TiffDecoder;
use tiff::tags::Tag;

use crate::DataError;

/// An image's georeference.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoRef {
    /// The affine transform in GDAL order: x0, pixel width, row rotation, y0, column rotation,
    /// pixel height (negative for north-up images).
    pub transform: [f64; 6],
    /// The EPSG code of the coordinate reference system, when known.
    pub epsg: Option<u32>,
    /// The CRS as WKT, when read from a `.prj` or `.aux.xml`.
    pub wkt: Option<String>,
}

impl GeoRef {
    /// The map coordinates of pixel position `(px, py)` (continuous: `(0, 0)` is the top-left
    /// corner of the image, `(width, height)` the bottom-right one).
    pub fn apply(&self, px: f64, py: f64) -> [f64; 2] {
        let t = &self.transform;
        [t[0] + px * t[1] + py * t[2], t[3] + px * t[4] + py * t[5]]
    }

    /// Whether a geographic (longitude/latitude) CRS: from the WKT when there is one, else
    /// from the EPSG code's range (4001 to 4999 are geographic 2D CRSs).
    fn is_geographic(&self) -> bool {
        match &self.wkt {
            Some(w) => {
                let w = w.trim_start().to_ascii_uppercase();
                w.starts_with("GEOGCS")
                    || w.starts_with("GEOGCRS")
                    || w.starts_with("GEOGRAPHICCRS")
            }
            None => self.epsg.is_some_and(|e| (4001..5000).contains(&e)),
        }
    }
}

/// The `.aux.xml` sidecar of `path` (`a.tif` has `a.tif.aux.xml`).
fn aux_xml_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".aux.xml");
    PathBuf::from(name)
}

/// `text` with XML's five special characters escaped.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// GeoTIFF tag and key numbers (GeoTIFF 1.1, OGC 19-008r4).
const MODEL_PIXEL_SCALE: u16 = 33550;
const MODEL_TIEPOINT: u16 = 33922;
const MODEL_TRANSFORMATION: u16 = 34264;
const GEO_KEY_DIRECTORY: u16 = 34735;
/// GDAL's no-data tag: the value as ASCII.
pub(crate) const GDAL_NODATA: u16 = 42113;
const GT_MODEL_TYPE: u16 = 1024;
const GT_RASTER_TYPE: u16 = 1025;
const GEOGRAPHIC_TYPE: u16 = 2048;
const PROJECTED_CS_TYPE: u16 = 3072;
const RASTER_PIXEL_IS_AREA: u16 = 1;
const RASTER_PIXEL_IS_POINT: u16 = 2;
/// GeoTIFF's "user-defined" code: no EPSG code.
const USER_DEFINED: u16 = 32767;

/// Reads the georeference of `image`: GeoTIFF tags first, else a world file beside it
/// (`.tfw`, `.jgw`, `.pgw`, `.tifw`, `.jpgw`, `.pngw`, `.wld`, ...). The CRS comes from the
/// GeoTIFF keys, else a `.prj` or `<image>.aux.xml` beside the image. `None` when neither tags
/// nor world file exist; an error naming the file when one of them is malformed.
pub fn read_georef(image: &Path) -> Result<Option<GeoRef>, DataError> {
    let mut georef = match read_geotiff(image)? {
        Some(g) => Some(g),
        None => match world_file(image) {
            Some(path) => Some(GeoRef {
                transform: read_world_file(&path)?,
                epsg: None,
                wkt: None,
            }),
            None => None,
        },
    };
    if let Some(g) = &mut georef
        && g.epsg.is_none()
        && g.wkt.is_none()
        && let Some(wkt) = side_wkt(image)?
    {
        g.epsg = epsg_of_wkt(&wkt);
        g.wkt = Some(wkt);
    }
    // The formats GDAL reads beyond GeoTIFF, PNG and JPEG, when built with it.
    #[cfg(feature = "gdal")]
    if georef.is_none()
        && !matches!(
            crate::files::ext_lower(image).as_str(),
            "png" | "jpg" | "jpeg" | "tif" | "tiff"
        )
    {
        georef = crate::scene::gdal_georef(image);
    }
    Ok(georef)
}

fn parse_err(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Parse {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The GeoTIFF georeference of `path`, if it is a TIFF with a transform among its tags.
fn read_geotiff(path: &Path) -> Result<Option<GeoRef>, DataError> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err()
        || !matches!(&magic, b"II*\0" | b"MM\0*" | b"II+\0" | b"MM\0+")
    {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| DataError::io(path, e))?;
    let bad = |what: &str, e: tiff::TiffError| parse_err(path, format!("{what}: {e}"));
    let mut dec =
        TiffDecoder::new(std::io::BufReader::new(file)).map_err(|e| bad("not a TIFF", e))?;
    let mut f64s = |tag: u16, name: &str| -> Result<Option<Vec<f64>>, DataError> {
        match dec.find_tag(Tag::Unknown(tag)) {
            Ok(Some(v)) => v.into_f64_vec().map(Some).map_err(|e| bad(name, e)),
            Ok(None) => Ok(None),
            Err(e) => Err(bad(name, e)),
        }
    };
    let scale = f64s(MODEL_PIXEL_SCALE, "ModelPixelScaleTag")?;
    let tie = f64s(MODEL_TIEPOINT, "ModelTiepointTag")?;
    let matrix = f64s(MODEL_TRANSFORMATION, "ModelTransformationTag")?;
    let keys = match dec.find_tag(Tag::Unknown(GEO_KEY_DIRECTORY)) {
        Ok(Some(v)) => Some(v.into_u16_vec().map_err(|e| bad("GeoKeyDirectoryTag", e))?),
        Ok(None) => None,
        Err(e) => return Err(bad("GeoKeyDirectoryTag", e)),
    };
    let mut transform = if let Some(m) = matrix {
        if m.len() != 16 {
            return Err(parse_err(
                path,
                format!("ModelTransformationTag has {} values, not 16", m.len()),
            ));
        }
        [m[3], m[0], m[1], m[7], m[4], m[5]]
    } else if let (Some(s), Some(t)) = (scale, tie) {
        if s.len() < 2 || t.len() < 6 {
            return Err(parse_err(
                path,
                format!(
                    "ModelPixelScaleTag has {} values and ModelTiepointTag {}, need 3 and 6",
                    s.len(),
                    t.len()
                ),
            ));
        }
        // The first tiepoint ties raster point (I, J) to model point (X, Y).
        let (i, j, x, y) = (t[0], t[1], t[3], t[4]);
        [x - i * s[0], s[0], 0.0, y + j * s[1], 0.0, -s[1]]
    } else {
        return Ok(None);
    };
    let t = &transform;
    if t.iter().any(|v| !v.is_finite()) || t[1] * t[5] - t[2] * t[4] == 0.0 {
        return Err(parse_err(
            path,
            format!("GeoTIFF transform {transform:?} is not usable"),
        ));
    }
    let mut epsg = None;
    if let Some(k) = keys {
        let keys = geo_keys(path, &k)?;
        let key = |id: u16| keys.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
        // GDAL shifts a PixelIsPoint raster by half a pixel, so that the transform always
        // names pixel corners.
        if key(GT_RASTER_TYPE) == Some(RASTER_PIXEL_IS_POINT) {
            transform[0] -= 0.5 * transform[1] + 0.5 * transform[2];
            transform[3] -= 0.5 * transform[4] + 0.5 * transform[5];
        }
        epsg = key(PROJECTED_CS_TYPE)
            .or(key(GEOGRAPHIC_TYPE))
            .filter(|&c| c != 0 && c != USER_DEFINED)
            .map(u32::from);
    }
    Ok(Some(GeoRef {
        transform,
        epsg,
        wkt: None,
    }))
}

/// The short (inline) keys of a GeoKeyDirectory: `(key id, value)`.
fn geo_keys(path: &Path, dir: &[u16]) -> Result<Vec<(u16, u16)>, DataError> {
    let n = dir.get(3).copied().unwrap_or(0) as usize;
    if dir.len() < 4 || dir.len() < 4 + 4 * n {
        return Err(parse_err(
            path,
            format!(
                "GeoKeyDirectoryTag has {} values, too few for its {n} keys",
                dir.len()
            ),
        ));
    }
    Ok(dir[4..4 + 4 * n]
        .chunks_exact(4)
        .filter(|k| k[1] == 0)
        .map(|k| (k[0], k[3]))
        .collect())
}

/// The candidate side files of `image` with extension `ext` replaced by each of `exts`.
fn beside(image: &Path, exts: &[String]) -> Option<PathBuf> {
    exts.iter()
        .flat_map(|e| [e.clone(), e.to_uppercase()])
        .map(|e| image.with_extension(e))
        .find(|p| p.is_file())
}

/// The world file beside `image`: `<stem>.<first and last letter of the extension>w`,
/// `<stem>.<extension>w` or `<stem>.wld`, in that order.
fn world_file(image: &Path) -> Option<PathBuf> {
    let ext = image.extension()?.to_string_lossy().to_lowercase();
    let mut exts = Vec::new();
    if let (Some(first), Some(last)) = (ext.chars().next(), ext.chars().last()) {
        exts.push(format!("{first}{last}w"));
    }
    exts.push(format!("{ext}w"));
    exts.push("wld".to_owned());
    beside(image, &exts)
}

/// Reads a world file (six numbers A D B E C F, one a line; C, F the centre of the top-left
/// pixel) as a GDAL transform (which names its corner).
fn read_world_file(path: &Path) -> Result<[f64; 6], DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut v = [0f64; 6];
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    for (i, slot) in v.iter_mut().enumerate() {
        let line = lines.next().ok_or_else(|| {
            parse_err(
                path,
                format!("world file has {i} numbers, needs 6 (A D B E C F)"),
            )
        })?;
        *slot = line
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| parse_err(path, format!("line {}: `{line}` is not a number", i + 1)))?;
    }
    let [a, d, b, e, c, f] = v;
    if a * e - b * d == 0.0 {
        return Err(parse_err(path, "world file transform is singular"));
    }
    Ok([c - a / 2.0 - b / 2.0, a, b, f - d / 2.0 - e / 2.0, d, e])
}

/// The CRS WKT of a `.prj` beside `image`, else of the `<SRS>` element of `<image>.aux.xml`.
fn side_wkt(image: &Path) -> Result<Option<String>, DataError> {
    if let Some(prj) = beside(image, &["prj".to_owned()]) {
        let text = std::fs::read_to_string(&prj).map_err(|e| DataError::io(&prj, e))?;
        let wkt = text.trim();
        if wkt.is_empty() {
            return Err(parse_err(&prj, "the .prj file is empty"));
        }
        return Ok(Some(wkt.to_owned()));
    }
    let mut aux = image.as_os_str().to_owned();
    aux.push(".aux.xml");
    let aux = PathBuf::from(aux);
    if !aux.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&aux).map_err(|e| DataError::io(&aux, e))?;
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut in_srs = false;
    let mut srs = String::new();
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) if e.name().as_ref() == b"SRS" => in_srs = true,
            Ok(quick_xml::events::Event::End(e)) if e.name().as_ref() == b"SRS" => break,
            Ok(quick_xml::events::Event::Text(t)) if in_srs => {
                let s = t
                    .decode()
                    .map_err(|e| parse_err(&aux, format!("malformed xml: {e}")))?;
                let s = quick_xml::escape::unescape(&s)
                    .map_err(|e| parse_err(&aux, format!("malformed xml: {e}")))?;
                srs.push_str(&s);
            }
            Ok(quick_xml::events::Event::GeneralRef(r)) if in_srs => {
                let name = r
                    .decode()
                    .map_err(|e| parse_err(&aux, format!("malformed xml: {e}")))?;
                let entity = format!("&{name};");
                let s = quick_xml::escape::unescape(&entity)
                    .map_err(|e| parse_err(&aux, format!("malformed xml: {e}")))?;
                srs.push_str(&s);
            }
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(parse_err(&aux, format!("malformed xml: {e}"))),
        }
    }
    let srs = srs.trim();
    Ok((!srs.is_empty()).then(|| srs.to_owned()))
}

/// The EPSG code of a WKT whose outermost CRS ends with `AUTHORITY["EPSG","nnnn"]` (WKT1) or
/// `ID["EPSG",nnnn]` (WKT2).
pub fn epsg_of_wkt(wkt: &str) -> Option<u32> {
    let upper = wkt.to_ascii_uppercase();
    let trimmed = upper.trim_end();
    // Strip the outermost CRS's closing bracket; the authority must then end the text.
    let inner = trimmed.strip_suffix(']')?.trim_end();
    let start = ["AUTHORITY[", "ID["]
        .iter()
        .filter_map(|k| inner.rfind(k).map(|i| (i, k.len())))
        .max()?;
    let body = inner[start.0 + start.1..].strip_suffix(']')?;
    let mut parts = body.split(',').map(|p| p.trim().trim_matches('"'));
    if parts.next()? != "EPSG" {
        return None;
    }
    let code = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(code)
}

/// A single-band unsigned-integer GeoTIFF written row by row (uncompressed, one strip per
/// row), with a georeference: ModelPixelScale and ModelTiepoint for north-up rasters,
/// ModelTransformation when rotated, and a GeoKeyDirectory naming the EPSG code when known.
/// Hand-written because the `tiff` crate's streaming `ImageEncoder` borrows its encoder, which
/// a writer kept across calls cannot hold; pixel data goes to disk as it comes, the small
/// directory at the end.
pub struct GeoTiffWriter {
    nodata: Option<u16>,
    path: PathBuf,
    file: BufWriter<std::fs::File>,
    width: u32,
    height: u32,
    wide: bool,
    rows: u32,
    georef: GeoRef,
}

/// The largest file a classic (32-bit offset) TIFF holds.
const CLASSIC_TIFF_MAX: u64 = u32::MAX as u64;

impl GeoTiffWriter {
    /// Starts `path`, `width` x `height`, 16-bit when `wide`, else 8-bit.
    pub fn create(
        path: &Path,
        width: u32,
        height: u32,
        wide: bool,
        georef: &GeoRef,
    ) -> Result<Self, DataError> {
        Self::create_with_nodata(path, width, height, wide, georef, None)
    }

    /// [`GeoTiffWriter::create`] with a no-data value, written as GDAL's `GDAL_NODATA` tag.
    pub fn create_with_nodata(
        path: &Path,
        width: u32,
        height: u32,
        wide: bool,
        georef: &GeoRef,
        nodata: Option<u16>,
    ) -> Result<Self, DataError> {
        // Pixels, then per row a strip offset and count, then the directory.
        let bytes = u64::from(width) * u64::from(height) * if wide { 2 } else { 1 }
            + 8 * u64::from(height)
            + 4096;
        if bytes > CLASSIC_TIFF_MAX {
            return Err(DataError::Write {
                path: path.to_owned(),
                reason: format!("{width}x{height} needs a BigTIFF, which is not written"),
            });
        }
        let file = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
        let mut file = BufWriter::new(file);
        // Little-endian header; the directory offset is filled in by `finish`.
        file.write_all(b"II*\0\0\0\0\0")
            .map_err(|e| DataError::io(path, e))?;
        Ok(GeoTiffWriter {
            nodata,
            path: path.to_owned(),
            file,
            width,
            height,
            wide,
            rows: 0,
            georef: georef.clone(),
        })
    }

    /// Writes the next row of `width` values.
    pub fn row(&mut self, values: &[u16]) -> Result<(), DataError> {
        if values.len() != self.width as usize || self.rows >= self.height {
            return Err(DataError::Write {
                path: self.path.clone(),
                reason: format!(
                    "row {} of {} values does not fit a {}x{} raster",
                    self.rows,
                    values.len(),
                    self.width,
                    self.height
                ),
            });
        }
        let io = |e| DataError::io(&self.path, e);
        if self.wide {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.file.write_all(&bytes).map_err(io)?;
        } else {
            let bytes: Vec<u8> = values.iter().map(|&v| v.min(255) as u8).collect();
            self.file.write_all(&bytes).map_err(io)?;
        }
        self.rows += 1;
        Ok(())
    }

    /// Writes the directory after the last row; for a CRS known only as WKT, also the
    /// `<path>.aux.xml` sidecar holding it, whose path is returned.
    pub fn finish(mut self) -> Result<Option<PathBuf>, DataError> {
        if self.rows != self.height {
            return Err(DataError::Write {
                path: self.path.clone(),
                reason: format!("{} rows written of {}", self.rows, self.height),
            });
        }
        let path = self.path.clone();
        let io = |e| DataError::io(&path, e);
        let bps: u16 = if self.wide { 16 } else { 8 };
        let row_bytes = u32::from(bps / 8) * self.width;
        let data_end = 8 + u64::from(row_bytes) * u64::from(self.height);
        let t = &self.georef.transform;
        let mut doubles: Vec<(u16, Vec<f64>)> = Vec::new();
        if t[2] == 0.0 && t[4] == 0.0 && t[5] < 0.0 {
            doubles.push((MODEL_PIXEL_SCALE, vec![t[1], -t[5], 0.0]));
            doubles.push((MODEL_TIEPOINT, vec![0.0, 0.0, 0.0, t[0], t[3], 0.0]));
        } else {
            doubles.push((
                MODEL_TRANSFORMATION,
                vec![
                    t[1], t[2], 0.0, t[0], t[4], t[5], 0.0, t[3], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                    0.0, 1.0,
                ],
            ));
        }
        let mut keys: Vec<[u16; 4]> = Vec::new();
        let epsg = self.georef.epsg.and_then(|e| u16::try_from(e).ok());
        let geographic = self.georef.is_geographic();
        if epsg.is_some() {
            keys.push([GT_MODEL_TYPE, 0, 1, if geographic { 2 } else { 1 }]);
        }
        keys.push([GT_RASTER_TYPE, 0, 1, RASTER_PIXEL_IS_AREA]);
        if let Some(code) = epsg {
            let key = if geographic {
                GEOGRAPHIC_TYPE
            } else {
                PROJECTED_CS_TYPE
            };
            keys.push([key, 0, 1, code]);
        }
        let mut geokeys = vec![1u16, 1, 0, keys.len() as u16];
        geokeys.extend(keys.iter().flatten());

        // Strip offsets and counts: one strip per row, contiguous from byte 8.
        let offsets: Vec<u32> = (0..self.height).map(|y| 8 + y * row_bytes).collect();
        let counts: Vec<u32> = vec![row_bytes; self.height as usize];

        enum Val {
            Short(Vec<u16>),
            Long(Vec<u32>),
            Double(Vec<f64>),
            Ascii(Vec<u8>),
        }
        let mut entries: Vec<(u16, Val)> = vec![
            (256, Val::Long(vec![self.width])),
            (257, Val::Long(vec![self.height])),
            (258, Val::Short(vec![bps])),
            (259, Val::Short(vec![1])),
            (262, Val::Short(vec![1])),
            (273, Val::Long(offsets)),
            (277, Val::Short(vec![1])),
            (278, Val::Long(vec![1])),
            (279, Val::Long(counts)),
            (284, Val::Short(vec![1])),
            (339, Val::Short(vec![1])),
            (GEO_KEY_DIRECTORY, Val::Short(geokeys)),
        ];
        entries.extend(doubles.into_iter().map(|(t, v)| (t, Val::Double(v))));
        if let Some(v) = self.nodata {
            let mut text = v.to_string().into_bytes();
            text.push(0);
            entries.push((GDAL_NODATA, Val::Ascii(text)));
        }
        entries.sort_by_key(|(t, _)| *t);

        // Word-align the directory, then its values that do not fit the entry follow it.
        let ifd = data_end + (data_end & 1);
        let ifd_len = 2 + 12 * entries.len() as u64 + 4;
        let mut extra: Vec<u8> = Vec::new();
        let mut dir: Vec<u8> = Vec::new();
        dir.extend((entries.len() as u16).to_le_bytes());
        for (tag, val) in &entries {
            let (ty, count, bytes): (u16, usize, Vec<u8>) = match val {
                Val::Short(v) => (3, v.len(), v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                Val::Long(v) => (4, v.len(), v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                Val::Double(v) => (
                    12,
                    v.len(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                Val::Ascii(v) => (2, v.len(), v.clone()),
            };
            dir.extend(tag.to_le_bytes());
            dir.extend(ty.to_le_bytes());
            dir.extend((count as u32).to_le_bytes());
            if bytes.len() <= 4 {
                let mut inline = [0u8; 4];
                inline[..bytes.len()].copy_from_slice(&bytes);
                dir.extend(inline);
            } else {
                if extra.len() % 2 == 1 {
                    extra.push(0);
                }
                let at = ifd + ifd_len + extra.len() as u64;
                let at = u32::try_from(at).map_err(|_| DataError::Write {
                    path: path.clone(),
                    reason: "file exceeds a classic TIFF's 4 GiB".into(),
                })?;
                dir.extend(at.to_le_bytes());
                extra.extend(bytes);
            }
        }
        dir.extend(0u32.to_le_bytes());
        if data_end & 1 == 1 {
            self.file.write_all(&[0]).map_err(io)?;
        }
        self.file.write_all(&dir).map_err(io)?;
        self.file.write_all(&extra).map_err(io)?;
        let ifd32 = u32::try_from(ifd).map_err(|_| DataError::Write {
            path: path.clone(),
            reason: "file exceeds a classic TIFF's 4 GiB".into(),
        })?;
        self.file.seek(SeekFrom::Start(4)).map_err(io)?;
        self.file.write_all(&ifd32.to_le_bytes()).map_err(io)?;
        self.file.flush().map_err(io)?;
        // A CRS known only as WKT has no GeoKey of its own: it goes into the sidecar GDAL
        // reads first for a GeoTIFF (and ArcGIS and `read_georef` read too).
        match (&self.georef.epsg, &self.georef.wkt) {
            (None, Some(wkt)) => {
                let aux = aux_xml_path(&path);
                let text = format!(
                    "<PAMDataset>\n  <SRS>{}</SRS>\n</PAMDataset>\n",
                    xml_escape(wkt)
                );
                std::fs::write(&aux, text).map_err(|e| DataError::io(&aux, e))?;
                Ok(Some(aux))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiff::encoder::{TiffEncoder, colortype};

    /// Writes an 8x4 GeoTIFF with the given extra tags.
    fn geotiff(path: &Path, f64_tags: &[(u16, Vec<f64>)], keys: Option<Vec<u16>>) {
        let file = std::fs::File::create(path).unwrap();
        let mut enc = TiffEncoder::new(file).unwrap();
        let mut img = enc.new_image::<colortype::Gray8>(8, 4).unwrap();
        for (tag, v) in f64_tags {
            img.encoder().write_tag(Tag::Unknown(*tag), &v[..]).unwrap();
        }
        if let Some(k) = keys {
            img.encoder()
                .write_tag(Tag::Unknown(GEO_KEY_DIRECTORY), &k[..])
                .unwrap();
        }
        img.write_data(&[7u8; 32]).unwrap();
    }

    fn close(a: [f64; 6], b: [f64; 6]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn geotiff_scale_and_tiepoint_with_epsg() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tif");
        geotiff(
            &p,
            &[
                (MODEL_PIXEL_SCALE, vec![0.5, 0.5, 0.0]),
                (
                    MODEL_TIEPOINT,
                    vec![0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0],
                ),
            ],
            Some(vec![
                1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32617,
            ]),
        );
        let g = read_georef(&p).unwrap().unwrap();
        assert!(close(
            g.transform,
            [500000.0, 0.5, 0.0, 4000000.0, 0.0, -0.5]
        ));
        assert_eq!(g.epsg, Some(32617));
        assert_eq!(g.wkt, None);
    }

    #[test]
    fn pixel_is_point_shifts_half_a_pixel() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tif");
        geotiff(
            &p,
            &[
                (MODEL_PIXEL_SCALE, vec![2.0, 3.0, 0.0]),
                (MODEL_TIEPOINT, vec![1.0, 1.0, 0.0, 100.0, 200.0, 0.0]),
            ],
            Some(vec![1, 1, 0, 2, 1025, 0, 1, 2, 2048, 0, 1, 4326]),
        );
        let g = read_georef(&p).unwrap().unwrap();
        // Tie (1, 1) -> (100, 200): corner (0, 0) at (98, 203), less half a pixel.
        assert!(close(g.transform, [97.0, 2.0, 0.0, 204.5, 0.0, -3.0]));
        assert_eq!(g.epsg, Some(4326));
    }

    #[test]
    fn geotiff_transformation_matrix_and_side_prj() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.tif");
        let m = vec![
            1.0, 0.2, 0.0, 10.0, 0.1, -1.0, 0.0, 20.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0,
        ];
        geotiff(&p, &[(MODEL_TRANSFORMATION, m)], None);
        std::fs::write(
            dir.path().join("r.prj"),
            r#"PROJCS["WGS 84 / UTM zone 17N",GEOGCS["WGS 84",AUTHORITY["EPSG","4326"]],AUTHORITY["EPSG","32617"]]"#,
        )
        .unwrap();
        let g = read_georef(&p).unwrap().unwrap();
        assert!(close(g.transform, [10.0, 1.0, 0.2, 20.0, 0.1, -1.0]));
        assert_eq!(g.epsg, Some(32617));
        assert!(g.wkt.unwrap().starts_with("PROJCS"));
    }

    #[test]
    fn tags_take_precedence_over_a_world_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tif");
        geotiff(
            &p,
            &[
                (MODEL_PIXEL_SCALE, vec![1.0, 1.0, 0.0]),
                (MODEL_TIEPOINT, vec![0.0, 0.0, 0.0, 5.0, 6.0, 0.0]),
            ],
            None,
        );
        std::fs::write(dir.path().join("a.tfw"), "9\n0\n0\n-9\n0\n0\n").unwrap();
        let g = read_georef(&p).unwrap().unwrap();
        assert!(close(g.transform, [5.0, 1.0, 0.0, 6.0, 0.0, -1.0]));
    }

    #[test]
    fn a_plain_tiff_has_no_georeference_unless_a_world_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tif");
        geotiff(&p, &[], None);
        assert_eq!(read_georef(&p).unwrap(), None);
        std::fs::write(dir.path().join("a.tfw"), "2\n0\n0\n-2\n101\n199\n").unwrap();
        let g = read_georef(&p).unwrap().unwrap();
        assert!(close(g.transform, [100.0, 2.0, 0.0, 200.0, 0.0, -2.0]));
    }

    #[test]
    fn world_files_of_every_extension() {
        let dir = tempfile::tempdir().unwrap();
        for (img, wf) in [
            ("a.jpg", "a.jgw"),
            ("b.jpg", "b.jpgw"),
            ("c.png", "c.pgw"),
            ("d.png", "d.pngw"),
            ("e.tif", "e.tifw"),
            ("f.jpg", "f.wld"),
            ("g.png", "g.PGW"),
        ] {
            let p = dir.path().join(img);
            std::fs::write(&p, b"not read").unwrap();
            std::fs::write(dir.path().join(wf), "0.5\n0\n0\n-0.5\n10.25\n20.75\n").unwrap();
            let g = read_georef(&p).unwrap().unwrap_or_else(|| panic!("{wf}"));
            assert!(
                close(g.transform, [10.0, 0.5, 0.0, 21.0, 0.0, -0.5]),
                "{wf}"
            );
            assert_eq!(g.epsg, None);
        }
        std::fs::write(dir.path().join("none.jpg"), b"x").unwrap();
        assert_eq!(read_georef(&dir.path().join("none.jpg")).unwrap(), None);
    }

    #[test]
    fn world_file_with_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jpg");
        std::fs::write(&p, b"x").unwrap();
        // A D B E C F
        std::fs::write(dir.path().join("a.jgw"), "2\n0.5\n0.25\n-2\n100\n200\n").unwrap();
        let g = read_georef(&p).unwrap().unwrap();
        assert!(close(
            g.transform,
            [
                100.0 - 1.0 - 0.125,
                2.0,
                0.25,
                200.0 - 0.25 + 1.0,
                0.5,
                -2.0
            ]
        ));
        // The centre of pixel (0, 0) is the world file's C, F.
        let [x, y] = g.apply(0.5, 0.5);
        assert!((x - 100.0).abs() < 1e-9 && (y - 200.0).abs() < 1e-9);
    }

    #[test]
    fn malformed_world_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jpg");
        std::fs::write(&p, b"x").unwrap();
        std::fs::write(dir.path().join("a.jgw"), "1\n0\n0\n-1\n").unwrap();
        let e = read_georef(&p).unwrap_err().to_string();
        assert!(e.contains("a.jgw") && e.contains("4 numbers"), "{e}");
        std::fs::write(dir.path().join("a.jgw"), "1\n0\n0\n-1\nten\n5\n").unwrap();
        let e = read_georef(&p).unwrap_err().to_string();
        assert!(e.contains("a.jgw") && e.contains("line 5"), "{e}");
    }

    #[test]
    fn malformed_geotiff_tags_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.tif");
        geotiff(&p, &[(MODEL_TRANSFORMATION, vec![1.0, 2.0, 3.0])], None);
        let e = read_georef(&p).unwrap_err().to_string();
        assert!(e.contains("bad.tif") && e.contains("not 16"), "{e}");
        geotiff(
            &p,
            &[
                (MODEL_PIXEL_SCALE, vec![1.0, 1.0, 0.0]),
                (MODEL_TIEPOINT, vec![0.0, 0.0, 0.0, 5.0, 6.0, 0.0]),
            ],
            Some(vec![1, 1, 0, 5, 1024, 0, 1, 1]),
        );
        let e = read_georef(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.tif") && e.contains("GeoKeyDirectory"),
            "{e}"
        );
    }

    #[test]
    fn aux_xml_gives_the_crs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        std::fs::write(&p, b"x").unwrap();
        std::fs::write(dir.path().join("a.pgw"), "1\n0\n0\n-1\n0.5\n-0.5\n").unwrap();
        std::fs::write(
            dir.path().join("a.png.aux.xml"),
            "<PAMDataset>\n  <SRS dataAxisToSRSAxisMapping=\"1,2\">GEOGCS[&quot;WGS 84&quot;,AUTHORITY[&quot;EPSG&quot;,&quot;4326&quot;]]</SRS>\n</PAMDataset>\n",
        )
        .unwrap();
        let g = read_georef(&p).unwrap().unwrap();
        assert_eq!(g.epsg, Some(4326));
        assert_eq!(
            g.wkt.as_deref(),
            Some(r#"GEOGCS["WGS 84",AUTHORITY["EPSG","4326"]]"#)
        );
    }

    #[test]
    fn epsg_only_from_the_outermost_authority() {
        assert_eq!(
            epsg_of_wkt(r#"PROJCS["x",GEOGCS["y",AUTHORITY["EPSG","4326"]],UNIT["m",1]]"#),
            None
        );
        assert_eq!(
            epsg_of_wkt(r#"PROJCRS["x",BASEGEOGCRS["y"],ID["EPSG",32617]]"#),
            Some(32617)
        );
        assert_eq!(epsg_of_wkt(r#"GEOGCS["y",AUTHORITY["ESRI","4326"]]"#), None);
    }

    /// A local CRS with no authority, with characters XML must escape.
    const WKT_ONLY: &str = r#"LOCAL_CS["Site grid <A&B>",LOCAL_DATUM["site",0],UNIT["metre",1]]"#;

    #[test]
    fn written_geotiffs_read_back() {
        let dir = tempfile::tempdir().unwrap();
        for (name, wide, georef) in [
            (
                "north.tif",
                false,
                GeoRef {
                    transform: [500000.0, 0.5, 0.0, 4000000.0, 0.0, -0.5],
                    epsg: Some(32617),
                    wkt: None,
                },
            ),
            (
                "rotated.tif",
                true,
                GeoRef {
                    transform: [10.0, 1.0, 0.2, 20.0, 0.1, -1.0],
                    epsg: Some(4326),
                    wkt: None,
                },
            ),
            (
                "nocrs.tif",
                false,
                GeoRef {
                    transform: [1.0, 2.0, 0.0, 3.0, 0.0, -2.0],
                    epsg: None,
                    wkt: None,
                },
            ),
            (
                "wkt-only.tif",
                false,
                GeoRef {
                    transform: [300.0, 1.0, 0.0, 700.0, 0.0, -1.0],
                    epsg: None,
                    wkt: Some(WKT_ONLY.to_owned()),
                },
            ),
        ] {
            let p = dir.path().join(name);
            let (w, h) = (5u32, 3u32);
            let mut wr = GeoTiffWriter::create(&p, w, h, wide, &georef).unwrap();
            for y in 0..h {
                let row: Vec<u16> = (0..w).map(|x| (x + 10 * y) as u16 * 30).collect();
                wr.row(&row).unwrap();
            }
            let aux = wr.finish().unwrap();
            let back = read_georef(&p).unwrap().unwrap();
            assert!(close(back.transform, georef.transform), "{name}");
            assert_eq!(back.epsg, georef.epsg, "{name}");
            // A WKT-only CRS travels in the .aux.xml sidecar, escaped, and reads back whole.
            assert_eq!(back.wkt, georef.wkt, "{name}");
            assert_eq!(aux.is_some(), georef.wkt.is_some(), "{name}");
            let mask = crate::load_mask(&p).unwrap();
            assert_eq!((mask.width, mask.height), (w, h));
            let want: Vec<u32> = (0..h)
                .flat_map(|y| (0..w).map(move |x| (x + 10 * y) * 30))
                .map(|v| if wide { v } else { v.min(255) })
                .collect();
            assert_eq!(mask.data, want, "{name}");
        }
    }
}
