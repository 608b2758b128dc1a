//! The dataset report behind `autodl data inspect`, as data (JSON) and as text.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::image_io::load_mask;
use crate::tiles::{Histogram, histogram};
use crate::{ArcgisExport, BadSample, DataError, Dataset, Format, Split, Task};

/// A count per split.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitCounts {
    /// In the train split.
    pub train: u64,
    /// In the val split.
    pub val: u64,
}

impl SplitCounts {
    /// Train plus val.
    pub fn total(&self) -> u64 {
        self.train + self.val
    }

    fn add(&mut self, split: Split, n: u64) {
        match split {
            Split::Train => self.train += n,
            Split::Val => self.val += n,
        }
    }
}

/// One class and how much of it each split holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClassSummary {
    /// [`crate::ClassInfo::value`].
    pub value: u32,
    /// [`crate::ClassInfo::name`].
    pub name: String,
    /// Boxes (detection) or pixels (pixel classification) of this class.
    pub count: SplitCounts,
    /// Detection: boxes of this class marked difficult.
    pub difficult: SplitCounts,
}

/// Pixels of the ignore value, which is not a class.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct IgnoreSummary {
    /// The mask value.
    pub value: u32,
    /// Its name in the class list, if it has one.
    pub name: Option<String>,
    /// Pixels with this value.
    pub pixels: SplitCounts,
}

/// The range of image sizes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeRange {
    /// Narrowest image.
    pub min_width: u32,
    /// Widest image.
    pub max_width: u32,
    /// Lowest image.
    pub min_height: u32,
    /// Tallest image.
    pub max_height: u32,
}

/// Statistics of the longest side of boxes (`max(xmax - xmin, ymax - ymin)`), in pixels.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct LongestSide {
    /// Smallest.
    pub min: f32,
    /// Median.
    pub median: f32,
    /// Largest.
    pub max: f32,
}

/// How many boxes have a longest side in `[min, max)`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SizeBucket {
    /// "16-32 px".
    pub label: String,
    /// Lower bound, inclusive.
    pub min: f32,
    /// Upper bound, exclusive; `None` for the last bucket.
    pub max: Option<f32>,
    /// Boxes in this bucket, both splits.
    pub count: u64,
}

/// Box statistics of a detection dataset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BoxStats {
    /// All boxes.
    pub total: SplitCounts,
    /// Boxes marked difficult.
    pub difficult: SplitCounts,
    /// Boxes marked crowd.
    pub crowd: SplitCounts,
    /// Longest side over both splits; `None` without boxes.
    pub longest_side: Option<LongestSide>,
    /// Longest side in buckets that double in size.
    pub buckets: Vec<SizeBucket>,
}

/// What `autodl data inspect` reports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Summary {
    /// The dataset folder.
    pub root: PathBuf,
    /// Its layout.
    pub format: Format,
    /// Its task.
    pub task: Task,
    /// Where the split came from.
    pub split_source: String,
    /// Images per split.
    pub images: SplitCounts,
    /// Images held out as the test split: counted, never read for the figures below.
    #[serde(default)]
    pub test_images: u64,
    /// What [`ClassSummary::count`] counts: "boxes" or "pixels".
    pub count_unit: String,
    /// Per class, in [`Dataset::classes`] order.
    pub classes: Vec<ClassSummary>,
    /// Pixel classification: the ignore value's pixels.
    pub ignore: Option<IgnoreSummary>,
    /// Image sizes; `None` for an empty dataset.
    pub image_size: Option<SizeRange>,
    /// The distinct band counts of the images.
    pub bands: Vec<u32>,
    /// Detection: box statistics.
    pub boxes: Option<BoxStats>,
    /// Samples left out, with reasons.
    pub skipped: Vec<BadSample>,
    /// What an ArcGIS export's side files say, with any disagreement with what was read.
    #[serde(default)]
    pub arcgis: Option<ArcgisExport>,
}

/// Bucket edges in pixels; each bucket doubles the previous one.
const BUCKET_EDGES: [f32; 5] = [16.0, 32.0, 64.0, 128.0, 256.0];

/// Summarises a dataset. Pixel classification reads every mask again (in parallel) to count
/// pixels; detection needs no I/O.
pub fn summarize(ds: &Dataset) -> Result<Summary, DataError> {
    let mut images = SplitCounts::default();
    let mut bands = BTreeSet::new();
    let mut size: Option<SizeRange> = None;
    for (split, s) in ds.samples() {
        images.add(split, 1);
        bands.insert(s.bands);
        size = Some(match size {
            None => SizeRange {
                min_width: s.width,
                max_width: s.width,
                min_height: s.height,
                max_height: s.height,
            },
            Some(r) => SizeRange {
                min_width: r.min_width.min(s.width),
                max_width: r.max_width.max(s.width),
                min_height: r.min_height.min(s.height),
                max_height: r.max_height.max(s.height),
            },
        });
    }
    let mut classes: Vec<ClassSummary> = ds
        .classes
        .iter()
        .map(|c| ClassSummary {
            value: c.value,
            name: c.name.clone(),
            count: SplitCounts::default(),
            difficult: SplitCounts::default(),
        })
        .collect();
    let (count_unit, ignore, boxes) = match ds.task {
        Task::Detection => {
            let stats = box_stats(ds, &mut classes);
            ("boxes", None, Some(stats))
        }
        Task::PixelClassification => {
            let ignore = pixel_counts(ds, &mut classes)?;
            ("pixels", ignore, None)
        }
    };
    Ok(Summary {
        root: ds.root.clone(),
        format: ds.format,
        task: ds.task,
        split_source: ds.split_source.clone(),
        images,
        test_images: ds.test.len() as u64,
        count_unit: count_unit.to_owned(),
        classes,
        ignore,
        image_size: size,
        bands: bands.into_iter().collect(),
        boxes,
        skipped: ds.skipped.clone(),
        arcgis: ds.arcgis.clone(),
    })
}

fn box_stats(ds: &Dataset, classes: &mut [ClassSummary]) -> BoxStats {
    let mut total = SplitCounts::default();
    let mut difficult = SplitCounts::default();
    let mut crowd = SplitCounts::default();
    let mut sides = Vec::new();
    for (split, s) in ds.samples() {
        for b in &s.boxes {
            total.add(split, 1);
            difficult.add(split, u64::from(b.difficult));
            crowd.add(split, u64::from(b.iscrowd));
            if let Some(c) = classes.get_mut(b.class) {
                c.count.add(split, 1);
                c.difficult.add(split, u64::from(b.difficult));
            }
            sides.push((b.xmax - b.xmin).max(b.ymax - b.ymin));
        }
    }
    sides.sort_by(f32::total_cmp);
    let longest_side = match (sides.first(), sides.last()) {
        (Some(&min), Some(&max)) => {
            let n = sides.len();
            let median = if n % 2 == 1 {
                sides[n / 2]
            } else {
                (sides[n / 2 - 1] + sides[n / 2]) / 2.0
            };
            Some(LongestSide { min, median, max })
        }
        _ => None,
    };
    let mut buckets = Vec::with_capacity(BUCKET_EDGES.len() + 1);
    let mut lo = 0.0f32;
    for hi in BUCKET_EDGES.into_iter().map(Some).chain([None]) {
        let count = sides
            .iter()
            .filter(|&&x| x >= lo && hi.is_none_or(|h| x < h))
            .count() as u64;
        let label = match hi {
            Some(h) if lo == 0.0 => format!("<{h} px"),
            Some(h) => format!("{lo}-{h} px"),
            None => format!(">={lo} px"),
        };
        buckets.push(SizeBucket {
            label,
            min: lo,
            max: hi,
            count,
        });
        lo = hi.unwrap_or(lo);
    }
    BoxStats {
        total,
        difficult,
        crowd,
        longest_side,
        buckets,
    }
}

fn pixel_counts(
    ds: &Dataset,
    classes: &mut [ClassSummary],
) -> Result<Option<IgnoreSummary>, DataError> {
    let all: Vec<(Split, &crate::Sample)> = ds.samples().collect();
    let hists: Vec<(Split, Histogram)> = all
        .par_iter()
        .filter_map(|(split, s)| s.label.as_ref().map(|l| (*split, l)))
        .map(|(split, label)| load_mask(label).map(|m| (split, histogram(&m.data))))
        .collect::<Result<_, _>>()?;
    let mut ignore = ds.ignore_index.map(|value| IgnoreSummary {
        value,
        name: ds.ignore_name.clone(),
        pixels: SplitCounts::default(),
    });
    for (split, hist) in hists {
        for (value, n) in hist {
            if let Some(c) = classes.iter_mut().find(|c| c.value == value) {
                c.count.add(split, n);
            } else if let Some(ig) = ignore.as_mut().filter(|ig| ig.value == value) {
                ig.pixels.add(split, n);
            }
        }
    }
    Ok(ignore)
}

impl Summary {
    /// A human-readable report.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        // Writing to a String cannot fail; results are ignored on purpose throughout.
        let _ = writeln!(t, "dataset   {}", self.root.display());
        let _ = writeln!(t, "format    {} ({})", self.format, self.task);
        let _ = writeln!(t, "split     {}", self.split_source);
        let _ = writeln!(
            t,
            "images    {} train, {} val, {} total",
            self.images.train,
            self.images.val,
            self.images.total()
        );
        if self.test_images > 0 {
            let _ = writeln!(
                t,
                "test      {} images held out, scored once after ranking (not counted here)",
                self.test_images
            );
        }
        if let Some(r) = self.image_size {
            let range = |a: u32, b: u32| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}..{b}")
                }
            };
            let bands: Vec<String> = self.bands.iter().map(u32::to_string).collect();
            let _ = writeln!(
                t,
                "size      {} x {} px (width x height), {} band(s)",
                range(r.min_width, r.max_width),
                range(r.min_height, r.max_height),
                bands.join(" or ")
            );
        }

        let _ = writeln!(t);
        let detection = self.task == Task::Detection;
        let name_w = self
            .classes
            .iter()
            .map(|c| c.name.len())
            .chain(self.ignore.iter().map(|i| ignore_label(i).len()))
            .chain([5])
            .max()
            .unwrap_or(5);
        let _ = write!(
            t,
            "{:>5}  {:<name_w$}  {:>10}  {:>10}  {:>10}",
            "value", "class", "train", "val", "total"
        );
        if detection {
            let _ = write!(t, "  {:>16}", "difficult (t/v)");
        }
        let _ = writeln!(t, "   [{}]", self.count_unit);
        for c in &self.classes {
            let _ = write!(
                t,
                "{:>5}  {:<name_w$}  {:>10}  {:>10}  {:>10}",
                c.value,
                c.name,
                c.count.train,
                c.count.val,
                c.count.total()
            );
            if detection {
                let _ = write!(
                    t,
                    "  {:>16}",
                    format!("{} / {}", c.difficult.train, c.difficult.val)
                );
            }
            let _ = writeln!(t);
        }
        if let Some(ig) = &self.ignore {
            let _ = writeln!(
                t,
                "{:>5}  {:<name_w$}  {:>10}  {:>10}  {:>10}",
                ig.value,
                ignore_label(ig),
                ig.pixels.train,
                ig.pixels.val,
                ig.pixels.total()
            );
        }

        if let Some(b) = &self.boxes {
            let _ = writeln!(t);
            let _ = writeln!(
                t,
                "boxes     {} train, {} val, {} total; {} difficult ({} train, {} val); {} crowd",
                b.total.train,
                b.total.val,
                b.total.total(),
                b.difficult.total(),
                b.difficult.train,
                b.difficult.val,
                b.crowd.total()
            );
            if let Some(l) = b.longest_side {
                let _ = writeln!(
                    t,
                    "longest side  min {}, median {}, max {} px",
                    l.min, l.median, l.max
                );
                let buckets: Vec<String> = b
                    .buckets
                    .iter()
                    .map(|k| format!("{}: {}", k.label, k.count))
                    .collect();
                let _ = writeln!(t, "              {}", buckets.join(", "));
            }
        }

        if let Some(a) = &self.arcgis {
            let _ = writeln!(t);
            arcgis_text(&mut t, a);
        }

        let _ = writeln!(t);
        if self.skipped.is_empty() {
            let _ = writeln!(t, "skipped   none");
        } else {
            let _ = writeln!(t, "skipped   {}:", self.skipped.len());
            for s in &self.skipped {
                let _ = writeln!(t, "  {s}");
            }
        }
        t
    }
}

fn ignore_label(ig: &IgnoreSummary) -> String {
    match &ig.name {
        Some(n) => format!("{n} [ignored]"),
        None => "[ignored]".to_owned(),
    }
}

/// The ArcGIS section of the report: the export's format, its `.emd`, `map.txt` and `stats.txt`,
/// and every disagreement found.
fn arcgis_text(t: &mut String, a: &ArcgisExport) {
    let mode = a.metadata_mode.as_deref().unwrap_or("unknown format");
    let _ = writeln!(t, "arcgis    export ({mode})");
    if let Some(emd) = &a.model_definition {
        let name = emd.file_name().map_or_else(
            || emd.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut parts = vec![name];
        if let Some(m) = &a.model_type {
            parts.push(format!("model type {m}"));
        }
        if let Some([w, h]) = a.chip_size {
            parts.push(format!("chips {w} x {h} px"));
        }
        if !a.extract_bands.is_empty() {
            let bands: Vec<String> = a.extract_bands.iter().map(u32::to_string).collect();
            parts.push(format!("bands {}", bands.join(",")));
        }
        let _ = writeln!(t, "  emd     {}", parts.join(", "));
        for c in &a.classes {
            let color = c
                .color
                .map(|[r, g, b]| format!(" colour #{r:02x}{g:02x}{b:02x}"))
                .unwrap_or_default();
            let _ = writeln!(t, "          class {} {}{color}", c.value, c.name);
        }
    }
    if let Some(n) = a.map_pairs {
        let _ = writeln!(t, "  map.txt {n} image/label pair(s)");
    }
    for s in &a.stats {
        let _ = writeln!(t, "  stats   {}: {}", s.label, s.value);
    }
    for w in &a.warnings {
        let _ = writeln!(t, "  warning {w}");
    }
}
