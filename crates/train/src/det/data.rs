//! Detection data: the dataset read into normalised items with continuous boxes, the boxes a
//! window or tile sees, and the augmented training samples cut from the items.

use autodl_api::{AugSample, DataSpec, PluginError};
use autodl_data::ClassInfo;
use autodl_detection::Box4;
use rayon::prelude::*;

use crate::data::{band_stats, data_err, read_options};
use crate::infer::normalise;
use crate::sample::{crop, tile_origin};
use autodl_api::sample_seed;

/// One image and its boxes, normalised.
#[derive(Debug, Clone)]
pub struct DetItem {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Normalised band-major pixels.
    pub image: Vec<f32>,
    /// Boxes in continuous pixels with their class index.
    pub boxes: Vec<(Box4, usize)>,
    /// Per box: VOC `difficult`.
    pub difficult: Vec<bool>,
    /// Per box: COCO `iscrowd`.
    pub crowd: Vec<bool>,
}

/// A detection dataset in memory.
#[derive(Debug, Clone)]
pub struct DetData {
    /// Bands per image.
    pub bands: usize,
    /// Classes in logit order.
    pub classes: Vec<ClassInfo>,
    /// Per-band means of the training split.
    pub mean: Vec<f32>,
    /// Per-band standard deviations of the training split.
    pub std: Vec<f32>,
    /// Training items.
    pub train: Vec<DetItem>,
    /// Validation items.
    pub val: Vec<DetItem>,
}

/// Reads a detection dataset and normalises every band with the training split's statistics.
/// Boxes become continuous rectangles: a VOC box from pixel 3 to pixel 5 spans 3 to 6.
pub fn load_data(spec: &DataSpec, seed: u64) -> Result<DetData, PluginError> {
    let ds = autodl_data::open(&spec.root, &read_options(spec, seed)?).map_err(data_err)?;
    if ds.task != autodl_data::Task::Detection {
        return Err(PluginError::Data(format!(
            "{} holds {} data, not boxes",
            spec.root.display(),
            ds.format
        )));
    }
    fn load<'a>(
        ds: &autodl_data::Dataset,
        samples: &'a [autodl_data::Sample],
    ) -> Result<Vec<(autodl_data::Image, &'a autodl_data::Sample)>, PluginError> {
        samples
            .par_iter()
            .map(|s| Ok((ds.load_image(s).map_err(data_err)?, s)))
            .collect()
    }
    let train = load(&ds, &ds.train)?;
    let val = load(&ds, &ds.val)?;
    let bands = train.first().map_or(0, |(img, _)| img.bands as usize);
    if let Some((img, s)) = train
        .iter()
        .chain(&val)
        .find(|(img, _)| img.bands as usize != bands)
    {
        return Err(PluginError::Data(format!(
            "{}: {} bands, other images have {bands}",
            s.image.display(),
            img.bands
        )));
    }
    let (mean, std) = band_stats(train.iter().map(|(img, _)| img), bands);
    let to_items = |v: Vec<(autodl_data::Image, &autodl_data::Sample)>| -> Vec<DetItem> {
        v.into_iter()
            .map(|(img, s)| DetItem {
                width: img.width as usize,
                height: img.height as usize,
                image: normalise(
                    img.data,
                    img.width as usize * img.height as usize,
                    &mean,
                    &std,
                ),
                boxes: s.boxes.iter().map(|b| (b.corners(), b.class)).collect(),
                difficult: s.boxes.iter().map(|b| b.difficult).collect(),
                crowd: s.boxes.iter().map(|b| b.iscrowd).collect(),
            })
            .collect()
    };
    Ok(DetData {
        bands,
        classes: ds.classes.clone(),
        mean: mean.clone(),
        std: std.clone(),
        train: to_items(train),
        val: to_items(val),
    })
}

/// The boxes seen through the `w x h` region at `(x0, y0)`, in its coordinates: clipped to
/// it, and kept only when at least 40 % of a box stays inside and at least 2 px a side.
pub(crate) fn clip_boxes(
    boxes: &[(Box4, usize)],
    (x0, y0, w, h): (usize, usize, usize, usize),
) -> Vec<(Box4, usize)> {
    let (cw, ch) = (w as f32, h as f32);
    boxes
        .iter()
        .filter_map(|&(b, c)| {
            let s = [
                b[0] - x0 as f32,
                b[1] - y0 as f32,
                b[2] - x0 as f32,
                b[3] - y0 as f32,
            ];
            let clipped = [s[0].max(0.0), s[1].max(0.0), s[2].min(cw), s[3].min(ch)];
            let area = autodl_detection::boxes::area(&clipped);
            (area >= 0.4 * autodl_detection::boxes::area(&s)
                && clipped[2] - clipped[0] >= 2.0
                && clipped[3] - clipped[1] >= 2.0)
                .then_some((clipped, c))
        })
        .collect()
}

/// The training sample seeded `seed` for item `index`: a tile of it, or, when the augmentation
/// combines samples (mosaic, mixup), with tiles of other items drawn from the seed; augmented.
pub(crate) fn make_sample(
    items: &[DetItem],
    index: usize,
    bands: usize,
    tile: usize,
    seed: u64,
    augment: &dyn autodl_api::SampleAugmenter,
) -> AugSample {
    let aug_seed = sample_seed(seed, 1, 0);
    let mut sources = vec![cut_tile(&items[index], bands, tile, seed)];
    for k in 1..augment.sources(aug_seed) {
        let other_seed = sample_seed(seed, 2, k as u64);
        let other = (other_seed % items.len() as u64) as usize;
        sources.push(cut_tile(
            &items[other],
            bands,
            tile,
            sample_seed(other_seed, 3, 0),
        ));
    }
    augment
        .compose(sources, aug_seed)
        .unwrap_or_else(|| cut_tile(&items[index], bands, tile, seed))
}

/// A `tile`-sided sample cut from `item` at a seeded random place (zero-padded when the image
/// is smaller), with boxes clipped to it. A box keeps its place only when at least 40 % of it
/// stays inside the tile.
fn cut_tile(item: &DetItem, bands: usize, tile: usize, seed: u64) -> AugSample {
    let (x0, y0) = tile_origin(seed, item.width, item.height, tile);
    let image = crop(
        &item.image,
        item.width,
        item.height,
        bands,
        (x0, y0, tile, tile),
        (tile, tile),
        0.0,
    );
    let boxes = clip_boxes(
        &item.boxes,
        (
            x0,
            y0,
            tile.min(item.width - x0),
            tile.min(item.height - y0),
        ),
    );
    AugSample {
        width: tile as u32,
        height: tile as u32,
        bands: bands as u32,
        image,
        mask: None,
        boxes,
    }
}
