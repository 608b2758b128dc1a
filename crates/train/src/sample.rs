//! Training samples both tasks cut the same way: a tile at a seeded random place in an image,
//! padded when the image is smaller, then stacked into a batch tensor.

use autodl_api::AugSample;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The top-left corner of a `tile`-sided crop of a `width x height` image, drawn from `seed`:
/// anywhere the tile fits, and 0 along a side shorter than the tile.
pub fn tile_origin(seed: u64, width: usize, height: usize, tile: usize) -> (usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let x0 = if width > tile {
        rng.random_range(0..=width - tile)
    } else {
        0
    };
    let y0 = if height > tile {
        rng.random_range(0..=height - tile)
    } else {
        0
    };
    (x0, y0)
}

/// Copies the `w x h` region at `(x0, y0)` of each of the `planes` band-major planes of a
/// `width x height` image into a `pw x ph` canvas filled with `fill` (zero, the mean after
/// normalisation, for pixels; the ignore index for masks).
#[allow(clippy::too_many_arguments)]
pub fn crop<T: Copy>(
    data: &[T],
    width: usize,
    height: usize,
    planes: usize,
    (x0, y0, w, h): (usize, usize, usize, usize),
    (pw, ph): (usize, usize),
    fill: T,
) -> Vec<T> {
    let mut out = vec![fill; planes * pw * ph];
    let (w, h) = (
        w.min(pw).min(width.saturating_sub(x0)),
        h.min(ph).min(height.saturating_sub(y0)),
    );
    for b in 0..planes {
        for y in 0..h {
            let src = b * width * height + (y0 + y) * width + x0;
            let dst = b * pw * ph + y * pw;
            out[dst..dst + w].copy_from_slice(&data[src..src + w]);
        }
    }
    out
}

/// Images as one `[N, bands, H, W]` tensor; every sample must have the same size.
pub fn images_tensor<B: Backend>(samples: &[AugSample], device: &B::Device) -> Tensor<B, 4> {
    let (b, h, w) = samples.first().map_or((0, 0, 0), |s| {
        (s.bands as usize, s.height as usize, s.width as usize)
    });
    let mut data = Vec::with_capacity(samples.len() * b * h * w);
    for s in samples {
        data.extend_from_slice(&s.image);
    }
    Tensor::from_data(TensorData::new(data, [samples.len(), b, h, w]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crop_past_the_edge_is_padded() {
        // A 3 x 2 image of two planes, cropped at (1, 1) into a 3 x 2 canvas.
        let data: Vec<u32> = (0..12).collect();
        let out = crop(&data, 3, 2, 2, (1, 1, 3, 2), (3, 2), 99);
        assert_eq!(out, vec![4, 5, 99, 99, 99, 99, 10, 11, 99, 99, 99, 99]);
    }

    #[test]
    fn the_origin_stays_inside() {
        for seed in 0..50 {
            let (x0, y0) = tile_origin(seed, 100, 20, 32);
            assert!(x0 <= 68 && y0 == 0);
        }
    }
}
