//! Fuzz targets for every reader of untrusted input (the label parsers of each dataset format,
//! class lists, ArcGIS export side files (`.emd`, `map.txt`, `stats.txt`) and RCNN_Masks instance
//! masks, images and masks, the pipeline file, detections given to `autodl evaluate`,
//! `.dlpk` packages and the PyTorch checkpoints `autodl weights import` reads), and a small
//! coverage-guided fuzzer that runs them on stable Rust.
//!
//! A target takes arbitrary bytes, puts them where a user's file would be and runs the real
//! reader on them. It may return an error (bad input must); it must not panic, abort, hang or
//! allocate without bound. [`engine`] mutates inputs from a corpus and keeps those that reach
//! new code, when the binary is built with LLVM's SanitizerCoverage ([`coverage`]); `cargo
//! xtask fuzz` builds it so. The tests run every target briefly without coverage, in CI.

pub mod coverage;
pub mod engine;

use std::io::Write;
use std::path::{Path, PathBuf};

/// One fuzz target.
#[derive(Clone, Copy)]
pub struct Target {
    /// Name, also the corpus folder's.
    pub name: &'static str,
    /// Runs the reader on one input. Errors are fine; panics are findings.
    pub run: fn(&Scratch, &[u8]),
    /// Valid inputs to start from, besides the corpus on disk.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Tokens of the format, spliced in by the mutator.
    pub dictionary: &'static [&'static str],
}

/// Every target.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "voc",
            run: voc,
            seeds: voc_seeds,
            dictionary: &[
                "<annotation>",
                "</annotation>",
                "<object>",
                "</object>",
                "<name>",
                "</name>",
                "<bndbox>",
                "</bndbox>",
                "<xmin>",
                "</xmin>",
                "<ymax>",
                "</ymax>",
                "<difficult>1</difficult>",
                "<size><width>8</width><height>8</height><depth>3</depth></size>",
                "<![CDATA[",
                "&amp;",
                "-1",
                "1e308",
                "NaN",
            ],
        },
        Target {
            name: "kitti",
            run: kitti,
            seeds: kitti_seeds,
            dictionary: &[
                "tree", "DontCare", " 0.00", " 3", " -1", "1e39", "nan", "inf", "\n", " ",
            ],
        },
        Target {
            name: "yolo",
            run: yolo,
            seeds: yolo_seeds,
            dictionary: &[
                "\0", "0 ", "1 ", "0.5", "1.5", "-0.1", "nan", "1e-40", "\n", "names:",
            ],
        },
        Target {
            name: "coco",
            run: coco,
            seeds: coco_seeds,
            dictionary: &[
                "\"images\"",
                "\"annotations\"",
                "\"categories\"",
                "\"bbox\"",
                "\"image_id\"",
                "\"category_id\"",
                "\"file_name\"",
                "\"iscrowd\"",
                "\"difficult\"",
                "-1",
                "1e309",
                "18446744073709551616",
                "null",
                "[]",
                "{}",
            ],
        },
        Target {
            name: "classes",
            run: classes,
            seeds: classes_seeds,
            dictionary: &[
                "\"Classes\"",
                "\"Value\"",
                "\"Name\"",
                "\"ClassValue\"",
                "\"ClassName\"",
                "nodata",
                "4294967296",
                "-1",
                "\n",
                "\t",
            ],
        },
        Target {
            name: "arcgis",
            run: arcgis,
            seeds: arcgis_seeds,
            dictionary: &[
                "\0",
                "\"Classes\"",
                "\"Value\"",
                "\"Color\"",
                "\"ImageWidth\"",
                "\"ExtractBands\"",
                "images\\a.png",
                "labels\\a.txt",
                "labels/1/a.png",
                "C:\\",
                "../",
                "Total number of image chips: ",
                "Total features: ",
                "4294967296",
                "-1",
                "1e309",
            ],
        },
        Target {
            name: "image",
            run: image,
            seeds: image_seeds,
            dictionary: &["IHDR", "IDAT", "IEND", "PLTE", "\u{1}\0\0\0", "\0\0\u{1}\0"],
        },
        Target {
            name: "georef",
            run: georef,
            seeds: georef_seeds,
            dictionary: &[
                "\n",
                "-0.5",
                "1e308",
                "NaN",
                "AUTHORITY[\"EPSG\",\"32617\"]]",
                "ID[\"EPSG\",4326]]",
                "<SRS>",
                "</SRS>",
                "&quot;",
            ],
        },
        Target {
            name: "pipeline",
            run: pipeline,
            seeds: pipeline_seeds,
            dictionary: &[
                "[data]",
                "[train]",
                "[augment]",
                "[advanced]",
                "time-limit = ",
                "\"10m\"",
                "\"18446744073709551615s\"",
                "tile-size = ",
                "networks = [\"unet\"]",
                "version = 1",
                "= 0",
                "= -1",
                "= 1e400",
            ],
        },
        Target {
            name: "dets",
            run: dets,
            seeds: dets_seeds,
            dictionary: &[
                "\"score\"",
                "\"bbox\"",
                "\"image_id\"",
                "\"category_id\"",
                "\"annotations\"",
                "NaN",
                "-1e309",
                "[]",
            ],
        },
        Target {
            name: "package",
            run: package,
            seeds: package_seeds,
            dictionary: &[
                "PK\u{3}\u{4}",
                "PK\u{1}\u{2}",
                "PK\u{5}\u{6}",
                "model.json",
                "model.mpk",
                "../",
            ],
        },
        Target {
            name: "checkpoint",
            run: checkpoint,
            seeds: checkpoint_seeds,
            dictionary: &[
                "PK\u{3}\u{4}",
                "data.pkl",
                "byteorder",
                "big",
                "storage",
                "ctorch\nFloatStorage\n",
                "ctorch\nHalfStorage\n",
                "ctorch._utils\n_rebuild_tensor_v2\n",
                "ccollections\nOrderedDict\n",
                "state_dict",
                "module.",
                "\u{80}\u{2}",
                "(",
                "t",
                "Q",
                "R",
                "u",
                ".",
            ],
        },
    ]
}

/// The target named `name`.
pub fn target(name: &str) -> Option<Target> {
    targets().into_iter().find(|t| t.name == name)
}

/// A folder the targets write their inputs into, with a small valid image ready. One per
/// fuzzing process, reused from input to input.
pub struct Scratch {
    dir: tempfile::TempDir,
    png: Vec<u8>,
    mask: Vec<u8>,
}

impl Scratch {
    /// A new scratch folder.
    pub fn new() -> std::io::Result<Scratch> {
        Ok(Scratch {
            dir: tempfile::tempdir()?,
            png: encode(image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(
                8,
                8,
                |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 90]),
            )))?,
            mask: encode(image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(
                8,
                8,
                |x, _| image::Luma([1 + (x as u8 % 2)]),
            )))?,
        })
    }

    /// An empty dataset folder: `root/images/a.png` and `root/labels/`, with whatever the
    /// last input left removed.
    fn dataset(&self) -> PathBuf {
        let root = self.dir.path().join("ds");
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::create_dir_all(root.join("labels"));
        let _ = std::fs::create_dir_all(root.join("images"));
        let _ = std::fs::write(root.join("images/a.png"), &self.png);
        root
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        let _ = std::fs::write(&path, bytes);
        path
    }
}

fn encode(img: image::DynamicImage) -> std::io::Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(std::io::Error::other)?;
    Ok(out.into_inner())
}

fn open(root: &Path, format: autodl_data::Format) {
    let opts = autodl_data::ReadOptions {
        format: Some(format),
        ..autodl_data::ReadOptions::default()
    };
    if let Ok(ds) = autodl_data::open(root, &opts) {
        // What the run does next with a dataset: summarise it.
        let _ = autodl_data::summarize(&ds);
    }
}

fn voc(s: &Scratch, input: &[u8]) {
    let root = s.dataset();
    let _ = std::fs::write(root.join("labels/a.xml"), input);
    open(&root, autodl_data::Format::PascalVoc);
}

fn kitti(s: &Scratch, input: &[u8]) {
    let root = s.dataset();
    let _ = std::fs::write(root.join("labels/a.txt"), input);
    open(&root, autodl_data::Format::Kitti);
}

/// Splits an input at its first NUL: two files from one input.
fn split(input: &[u8]) -> (&[u8], &[u8]) {
    match input.iter().position(|&b| b == 0) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (&[], input),
    }
}

fn yolo(s: &Scratch, input: &[u8]) {
    let root = s.dataset();
    let (names, labels) = split(input);
    let _ = std::fs::write(root.join("classes.txt"), names);
    let _ = std::fs::write(root.join("labels/a.txt"), labels);
    open(&root, autodl_data::Format::Yolo);
}

fn coco(s: &Scratch, input: &[u8]) {
    let root = s.dataset();
    let _ = std::fs::remove_dir(root.join("labels"));
    let _ = std::fs::write(root.join("annotations.json"), input);
    open(&root, autodl_data::Format::Coco);
}

fn classes(s: &Scratch, input: &[u8]) {
    let root = s.dataset();
    let _ = std::fs::write(root.join("labels/a.png"), &s.mask);
    // The first byte picks the class file: an ArcGIS .emd, map.txt or classes.txt.
    let (name, rest) = match input.split_first() {
        Some((b, rest)) => (
            ["esri_model_definition.emd", "map.txt", "classes.txt"][usize::from(*b) % 3],
            rest,
        ),
        None => ("classes.txt", input),
    };
    let _ = std::fs::write(root.join(name), rest);
    open(&root, autodl_data::Format::ClassifiedTiles);
}

/// An ArcGIS export from one input, its parts split at NULs: the `.emd`, `map.txt`, `stats.txt`,
/// a KITTI label (read with the `.emd`'s classes) and an RCNN_Masks instance mask (the scratch
/// mask when absent).
fn arcgis(s: &Scratch, input: &[u8]) {
    let mut parts = input.splitn(5, |&b| b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (emd, map, stats, label, mask) = (next(), next(), next(), next(), next());
    let root = s.dataset();
    let _ = std::fs::write(root.join("esri_model_definition.emd"), emd);
    let _ = std::fs::write(root.join("map.txt"), map);
    let _ = std::fs::write(root.join("stats.txt"), stats);
    let _ = std::fs::write(root.join("labels/a.txt"), label);
    open(&root, autodl_data::Format::Kitti);
    let _ = std::fs::remove_file(root.join("labels/a.txt"));
    let _ = std::fs::create_dir_all(root.join("labels/1"));
    let mask = if mask.is_empty() { &s.mask[..] } else { mask };
    let _ = std::fs::write(root.join("labels/1/a.png"), mask);
    let opts = autodl_data::ReadOptions {
        format: Some(autodl_data::Format::RcnnMasks),
        ..autodl_data::ReadOptions::default()
    };
    if let Ok(ds) = autodl_data::open(&root, &opts) {
        let _ = autodl_data::summarize(&ds);
        for (_, sample) in ds.samples() {
            let _ = autodl_data::instance_masks(&ds, sample);
        }
    }
}

fn image(s: &Scratch, input: &[u8]) {
    // The decoders pick the format from the content; the extension is the fallback.
    for name in ["x.png", "x.tif"] {
        let path = s.file(name, input);
        let _ = autodl_data::load_image(&path);
        let _ = autodl_data::load_mask(&path);
        if let Ok(raw) = autodl_data::load_raw_image(&path)
            && raw.width > 0
            && raw.height > 0
        {
            let mut row = vec![0f32; raw.width as usize];
            raw.band_row(raw.bands as usize - 1, raw.height as usize - 1, 0, &mut row);
        }
    }
}

fn georef(s: &Scratch, input: &[u8]) {
    // A world file and its CRS (a `.prj`, or an `.aux.xml` when the first byte is odd), then
    // the input itself as a TIFF whose tags are read.
    let (world, crs) = split(input);
    let dir = s.dir.path().join("geo");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("a.png"), &s.png);
    let _ = std::fs::write(dir.join("a.pgw"), world);
    let side = if crs.first().is_some_and(|b| b % 2 == 1) {
        "a.png.aux.xml"
    } else {
        "a.prj"
    };
    let _ = std::fs::write(dir.join(side), crs);
    let _ = autodl_data::read_georef(&dir.join("a.png"));
    let _ = autodl_data::read_georef(&s.file("g.tif", input));
}

fn pipeline(_: &Scratch, input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    if let Ok(p) = autodl_config::Pipeline::parse(&text, Path::new("pipeline.toml"))
        && let Ok(again) = toml::to_string(&p)
    {
        // What parses must survive being written back.
        let back = autodl_config::Pipeline::parse(&again, Path::new("again.toml"));
        assert!(
            back.is_ok(),
            "a parsed pipeline does not parse again: {back:?}\n{again}"
        );
    }
}

fn dets(s: &Scratch, input: &[u8]) {
    use autodl_detection_metrics as m;
    // Ground truth before the first NUL, detections after: what `autodl evaluate` reads.
    let (gt, found) = split(input);
    let path = s.file("dets.json", found);
    let _ = m::read_predictions(&path);
    let dets = m::read_coco_dets(&path);
    if let (Ok(gt), Ok(dets)) = (m::parse_coco_gt(&String::from_utf8_lossy(gt)), dets) {
        let _ = m::coco_eval(&gt.images, &gt.categories, &gt.annotations, &dets);
        let _ = m::voc_ap(&gt.annotations, &dets, 0.5, m::VocMethod::AllPoint);
    }
}

fn package(s: &Scratch, input: &[u8]) {
    let pkg = s.file("m.dlpk", input);
    let out = s.dir.path().join("unpacked");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::create_dir_all(&out);
    if autodl_package::unpack(&pkg, &out).is_ok() {
        let _ = autodl_package::ModelMeta::load(&out);
    }
}

fn voc_seeds() -> Vec<Vec<u8>> {
    vec![
        br#"<annotation><filename>a.png</filename><size><width>8</width><height>8</height><depth>3</depth></size>
<object><name>tree</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>6</ymax></bndbox></object>
<object><name>shrub</name><bndbox><xmin>2.5</xmin><ymin>0</ymin><xmax>8</xmax><ymax>8</ymax></bndbox></object></annotation>"#
            .to_vec(),
    ]
}

fn kitti_seeds() -> Vec<Vec<u8>> {
    vec![
        b"tree 0.00 0 0.0 1.00 1.00 5.00 6.00 0 0 0 0 0 0 0\nDontCare -1 -1 -10 2 2 4 4 -1 -1 -1 -1000 -1000 -1000 -10\n"
            .to_vec(),
    ]
}

fn yolo_seeds() -> Vec<Vec<u8>> {
    vec![b"tree\nshrub\n\x000 0.5 0.5 0.25 0.25\n1 0.2 0.3 0.1 0.1\n".to_vec()]
}

fn coco_seeds() -> Vec<Vec<u8>> {
    vec![
        br#"{"images":[{"id":1,"file_name":"a.png","width":8,"height":8}],
"annotations":[{"id":1,"image_id":1,"category_id":3,"bbox":[1,1,4,5],"area":20,"iscrowd":0}],
"categories":[{"id":3,"name":"tree"}]}"#
            .to_vec(),
    ]
}

fn classes_seeds() -> Vec<Vec<u8>> {
    let mut emd = vec![0u8];
    emd.extend(
        br#"{"Classes":[{"Value":1,"Name":"forest","Color":[0,128,0]},{"Value":2,"Name":"water","Color":[0,0,255]}]}"#,
    );
    let mut map = vec![1u8];
    map.extend(b"1 forest\n2 water\n");
    let mut txt = vec![2u8];
    txt.extend(b"0 nodata\n1 forest\n2 water\n");
    vec![emd, map, txt]
}

fn arcgis_seeds() -> Vec<Vec<u8>> {
    vec![
        [
            &br#"{"ModelType":"ObjectDetection","ImageWidth":8,"ImageHeight":8,"ExtractBands":[0,1,2],"Classes":[{"Value":1,"Name":"tree","Color":[0,168,0]},{"Value":2,"Name":"car","Color":[-1,-1,-1]}]}"#[..],
            b"\0images\\a.png labels\\a.txt\r\n",
            b"\0Total number of image chips: 1\nTotal features: 2\n",
            b"\x001 0.00 0 0.00 1.00 1.00 5.00 6.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00\n2 0.00 0 0.00 0 0 7 7 0 0 0 0 0 0 0\n",
        ]
        .concat(),
    ]
}

fn image_seeds() -> Vec<Vec<u8>> {
    let rgb = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(4, 3, |x, y| {
        image::Rgb([x as u8, y as u8, 7])
    }));
    let gray16 = image::DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(3, 2, |x, _| {
        image::Luma([x as u16 * 1000])
    }));
    let mut seeds = Vec::new();
    for (img, format) in [
        (&rgb, image::ImageFormat::Png),
        (&gray16, image::ImageFormat::Png),
        (&rgb, image::ImageFormat::Tiff),
        (&gray16, image::ImageFormat::Tiff),
        (&rgb, image::ImageFormat::Jpeg),
    ] {
        let mut out = std::io::Cursor::new(Vec::new());
        if img.write_to(&mut out, format).is_ok() {
            seeds.push(out.into_inner());
        }
    }
    seeds
}

fn georef_seeds() -> Vec<Vec<u8>> {
    let world = "0.5\n0\n0\n-0.5\n500000.25\n4000000.75\n";
    vec![
        format!("{world}\0PROJCS[\"WGS 84 / UTM zone 17N\",AUTHORITY[\"EPSG\",\"32617\"]]")
            .into_bytes(),
        format!(
            "{world}\0\u{1}<PAMDataset><SRS>GEOGCS[&quot;WGS 84&quot;,AUTHORITY[&quot;EPSG&quot;,&quot;4326&quot;]]</SRS></PAMDataset>"
        )
        .into_bytes(),
    ]
}

fn pipeline_seeds() -> Vec<Vec<u8>> {
    vec![
        br#"version = 1
name = "x"
backend = "cpu"
seed = 42

[data]
path = "data"
format = "pascal-voc"
val-fraction = 0.2
on-bad-sample = "skip"

[train]
time-limit = "10m"
mode = "advanced"
networks = ["unet", "retinanet"]
max-epochs = 20
batch-size = "auto"
learning-rate = 0.001
tile-size = 256

[augment]
preset = "default"
"#
        .to_vec(),
    ]
}

fn dets_seeds() -> Vec<Vec<u8>> {
    let gt = br#"{"images":[{"id":1,"file_name":"a.png","width":8,"height":8}],"categories":[{"id":3,"name":"tree"}],
"annotations":[{"id":1,"image_id":1,"category_id":3,"bbox":[1,1,4,4],"area":16,"iscrowd":0}]}"#;
    let with_gt = |d: &[u8]| [gt.as_slice(), b"\0", d].concat();
    vec![
        with_gt(br#"[{"image_id":1,"category_id":3,"bbox":[1,1,4,5],"score":0.9}]"#),
        br#"[{"image_id":1,"category_id":3,"bbox":[1,1,4,5],"score":0.9}]"#.to_vec(),
        br#"{"images":[{"id":1,"file_name":"a.png","width":8,"height":8}],"categories":[{"id":3,"name":"tree"}],
"annotations":[{"id":1,"image_id":1,"category_id":3,"bbox":[1,1,4,5],"area":20,"iscrowd":0,"score":0.5}]}"#
            .to_vec(),
    ]
}

fn checkpoint(_: &Scratch, input: &[u8]) {
    let _ = autodl_checkpoint::read(input);
}

/// PyTorch 2 checkpoints in both formats (`tests/fixtures/backbones/torch_checkpoints.py`).
fn checkpoint_seeds() -> Vec<Vec<u8>> {
    vec![
        include_bytes!("../../../tests/fixtures/backbones/torch_small_zip.pth").to_vec(),
        include_bytes!("../../../tests/fixtures/backbones/torch_small_legacy.pth").to_vec(),
    ]
}

fn package_seeds() -> Vec<Vec<u8>> {
    let Ok(dir) = tempfile::tempdir() else {
        return Vec::new();
    };
    let model = dir.path().join("m");
    let meta = br#"{"family":"unet","backbone":"resnet18","task":"pixel-classification","bands":3,"tile-size":64,
"classes":[{"value":1,"name":"forest"},{"value":2,"name":"water"}],"ignore-index":0,"mean":[1,2,3],"std":[1,1,1],"params":{}}"#;
    let pkg = dir.path().join("m.dlpk");
    let made = std::fs::create_dir(&model).is_ok()
        && std::fs::write(model.join("model.json"), meta).is_ok()
        && std::fs::File::create(model.join("model.mpk"))
            .and_then(|mut f| f.write_all(&[0x80; 64]))
            .is_ok()
        && autodl_package::write(&model, &pkg, "unet-resnet18", None).is_ok();
    if !made {
        return Vec::new();
    }
    std::fs::read(&pkg).map(|b| vec![b]).unwrap_or_default()
}
