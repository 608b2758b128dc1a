//! Prediction over a whole scene holds one band of it. A 20,000 x 20,000, 3-band, 16-bit
//! raster (2.4 GB of samples) predicts through `predict_segmentation`, the function every
//! pixel classifier's `autodl predict` runs, with a peak resident memory under 2 GB, measured
//! in a child process of its own; and a scene read band by band predicts exactly what the
//! image decoded whole predicts.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use autodl_api::{ClassInfo, Params, PredictProgress, Task};
use autodl_backend::burn::backend::Flex;
use autodl_train::infer::{self, Scene, View};
use autodl_train::model_dir::ModelMeta;
use autodl_train::seg::SegNet;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// A pixel classifier of one 1 x 1 convolution: the network is not what is measured.
#[derive(Module, Debug)]
struct PixelNet<B: Backend> {
    conv: Conv2d<B>,
}

impl<B: Backend> SegNet<B> for PixelNet<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(x)
    }
}

fn build<B: Backend>(device: &B::Device, meta: &ModelMeta) -> PixelNet<B> {
    PixelNet {
        conv: Conv2dConfig::new([meta.bands, meta.classes.len()], [1, 1]).init(device),
    }
}

const SIDE: u32 = 20_000;
const BANDS: usize = 3;

fn meta() -> ModelMeta {
    ModelMeta {
        family: "pixelnet".into(),
        backbone: "none".into(),
        task: Task::PixelClassification,
        bands: BANDS,
        classes: vec![
            ClassInfo {
                value: 1,
                name: "low".into(),
            },
            ClassInfo {
                value: 2,
                name: "high".into(),
            },
        ],
        ignore_index: None,
        mean: vec![30_000.0; BANDS],
        std: vec![20_000.0; BANDS],
        tile_size: 256,
        params: Params::default(),
    }
}

/// Band `b` of pixel `(x, y)` of the synthetic scenes: a gradient, stripes and blocks.
fn sample(b: usize, x: u32, y: u32) -> u16 {
    match b {
        0 => (x / 20) as u16,
        1 => {
            if (y / 500).is_multiple_of(2) {
                60_000
            } else {
                100
            }
        }
        _ => ((x / 1000 + y / 1000) % 7) as u16 * 9000,
    }
}

/// A 16-bit RGB scene written strip by strip (deflate, 64 rows a strip), as GIS software
/// writes large rasters. The strips are compressed here with zlib: the `tiff` crate's
/// encoder labels strips deflated that it wrote uncompressed.
fn write_scene(path: &Path, width: u32, height: u32) {
    use std::io::Write;
    use tiff::encoder::TiffEncoder;
    use tiff::tags::Tag;
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut enc = TiffEncoder::new(file).unwrap();
    let mut dir = enc.image_directory().unwrap();
    let rows = 64u32;
    let (mut offsets, mut counts) = (Vec::new(), Vec::new());
    let mut strip = Vec::with_capacity((width * rows) as usize * BANDS * 2);
    let mut y = 0;
    while y < height {
        strip.clear();
        for yy in y..(y + rows).min(height) {
            for x in 0..width {
                for b in 0..BANDS {
                    strip.extend(sample(b, x, yy).to_le_bytes());
                }
            }
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&strip).unwrap();
        let bytes = z.finish().unwrap();
        offsets.push(dir.write_data(bytes.as_slice()).unwrap() as u32);
        counts.push(bytes.len() as u32);
        y += rows;
    }
    dir.write_tag(Tag::ImageWidth, width).unwrap();
    dir.write_tag(Tag::ImageLength, height).unwrap();
    dir.write_tag(Tag::BitsPerSample, &[16u16; BANDS][..])
        .unwrap();
    dir.write_tag(Tag::Compression, 8u16).unwrap();
    dir.write_tag(Tag::PhotometricInterpretation, 2u16).unwrap();
    dir.write_tag(Tag::StripOffsets, offsets.as_slice())
        .unwrap();
    dir.write_tag(Tag::SamplesPerPixel, BANDS as u16).unwrap();
    dir.write_tag(Tag::RowsPerStrip, rows).unwrap();
    dir.write_tag(Tag::StripByteCounts, counts.as_slice())
        .unwrap();
    dir.write_tag(Tag::PlanarConfiguration, 1u16).unwrap();
    dir.finish().unwrap();
}

/// Counts what prediction reports.
#[derive(Default)]
struct Count {
    images: std::sync::atomic::AtomicUsize,
    windows: std::sync::atomic::AtomicUsize,
}

impl PredictProgress for Count {
    fn image(&self, _: &Path, windows: usize) {
        self.images
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(windows > 0);
    }

    fn window(&self) {
        self.windows
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn a_scene_read_band_by_band_predicts_what_the_whole_image_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scene.tif");
    // Three bands of windows down, three across.
    let (w, h) = (1300, 1100);
    write_scene(&path, w, h);
    let device = Default::default();
    let meta = meta();
    let model = build::<Flex>(&device, &meta);
    let whole = autodl_data::load_raw_image(&path).unwrap();
    let want = infer::segment(
        &model,
        View::raw(&whole, &meta.mean, &meta.std),
        2,
        256,
        &device,
    )
    .unwrap();
    let mut reader = infer::open_scene(&path, BANDS).unwrap();
    assert!(reader.streamed());
    let count = Count::default();
    let mut got = Vec::new();
    let mut next = 0;
    infer::segment_rows(
        &model,
        Scene::new(&mut reader, &meta.mean, &meta.std, false, &count),
        2,
        256,
        &device,
        |y, row| {
            assert_eq!(y, next);
            next += 1;
            got.push(row.to_vec());
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(next, h as usize);
    let plane = (w * h) as usize;
    for (y, row) in got.iter().enumerate() {
        for c in 0..2 {
            let w = w as usize;
            assert_eq!(
                &row[c * w..(c + 1) * w],
                &want[c * plane + y * w..c * plane + (y + 1) * w],
                "row {y} class {c}"
            );
        }
    }
    assert_eq!(
        count.windows.load(std::sync::atomic::Ordering::Relaxed),
        infer::windows(w as usize, h as usize, 256).len()
    );
    // A model for another band count is refused with the file's name.
    let err = infer::open_scene(&path, 4).unwrap_err().to_string();
    assert!(
        err.contains("scene.tif") && err.contains("3 bands"),
        "{err}"
    );
}

/// The child's work: writes the model and the scene, predicts, prints its peak memory.
#[test]
#[ignore = "run by a_whole_scene_predicts_in_bounded_memory in a child process of its own"]
fn predict_scene_child() {
    let Some(dir) = std::env::var_os("AUTODL_SCENE_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    let device = Default::default();
    let meta = meta();
    let model_dir = dir.join("model");
    std::fs::create_dir_all(&model_dir).unwrap();
    meta.save(&model_dir).unwrap();
    build::<Flex>(&device, &meta)
        .save_file(
            ModelMeta::weights_stem(&model_dir),
            &NamedMpkFileRecorder::<FullPrecisionSettings>::new(),
        )
        .unwrap();
    let scene = dir.join("scene.tif");
    write_scene(&scene, SIDE, SIDE);
    let before = peak_kib();
    let start = std::time::Instant::now();
    let count = Count::default();
    let written = autodl_train::predict::predict_segmentation::<Flex, PixelNet<Flex>, _>(
        &model_dir,
        &[scene],
        &dir.join("out"),
        &count,
        &device,
        build::<Flex>,
    )
    .unwrap();
    println!(
        "scene-peak-kib={} writing-peak-kib={before} seconds={:.1} written={} windows={}",
        peak_kib(),
        start.elapsed().as_secs_f64(),
        written.len(),
        count.windows.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// This process's peak resident memory in KiB (`VmHWM`).
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
#[cfg(target_os = "linux")]
fn a_whole_scene_predicts_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["predict_scene_child", "--exact", "--ignored", "--nocapture"])
        .env("AUTODL_SCENE_DIR", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |key: &str| -> f64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    let peak_mib = field("scene-peak-kib=") / 1024.0;
    eprintln!(
        "{SIDE} x {SIDE} x {BANDS} x 16-bit scene: peak {peak_mib:.0} MiB, {:.1} s, {} windows",
        field("seconds="),
        field("windows=")
    );
    // The samples alone are 2400 MB; a band of windows is about 60 MB.
    assert!(peak_mib < 2048.0, "peak {peak_mib:.0} MiB");
    assert_eq!(field("written="), 1.0);
    assert_eq!(
        field("windows=") as usize,
        infer::windows(SIDE as usize, SIDE as usize, 256).len()
    );
    // Every row was written: the class PNG has the scene's size.
    let labels = dir.path().join("out/scene.png");
    let file = std::io::BufReader::new(std::fs::File::open(&labels).unwrap());
    let reader = png::Decoder::new(file).read_info().unwrap();
    assert_eq!((reader.info().width, reader.info().height), (SIDE, SIDE));
}
