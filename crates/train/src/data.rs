//! What both tasks do with a trial's dataset before it becomes their own items: reading
//! options from the data spec, and per-band statistics for normalisation.

use autodl_api::{DataSpec, PluginError};
use autodl_data::{Format, OnBadSample, ReadOptions};

/// A data-reading error as the plugin error the trial reports.
pub(crate) fn data_err(e: impl std::fmt::Display) -> PluginError {
    PluginError::Data(e.to_string())
}

/// Reads options for `autodl-data` from a trial's data spec.
pub fn read_options(spec: &DataSpec, seed: u64) -> Result<ReadOptions, PluginError> {
    let format = match &spec.format {
        Some(f) => Some(f.parse::<Format>().map_err(data_err)?),
        None => None,
    };
    Ok(ReadOptions {
        format,
        images_dir: spec.images_dir.clone(),
        val_fraction: spec.val_fraction,
        test_fraction: spec.test_fraction,
        seed,
        on_bad_sample: if spec.fail_on_bad_sample {
            OnBadSample::Fail
        } else {
            OnBadSample::Skip
        },
        ignore_index: spec.ignore_index,
        bands: spec.bands.clone(),
    })
}

/// Per-band mean and standard deviation (floored at 1e-6) over every pixel.
pub fn band_stats<'a>(
    images: impl Iterator<Item = &'a autodl_data::Image>,
    bands: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut sum = vec![0f64; bands];
    let mut sq = vec![0f64; bands];
    let mut n = 0f64;
    for img in images {
        let plane = (img.width * img.height) as usize;
        for (b, chunk) in img.data.chunks(plane).enumerate().take(bands) {
            for &x in chunk {
                sum[b] += x as f64;
                sq[b] += (x as f64) * (x as f64);
            }
        }
        n += plane as f64;
    }
    let n = n.max(1.0);
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let std = sq
        .iter()
        .zip(&sum)
        .map(|(q, s)| ((q / n - (s / n).powi(2)).max(0.0).sqrt().max(1e-6)) as f32)
        .collect();
    (mean, std)
}
