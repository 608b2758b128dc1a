//! Adapting a pretrained first convolution to another number of input bands.
//!
//! The rule, as arcgis.learn applies it to multispectral imagery, for pretrained filters
//! `W[:, c]` over `C` bands (3 for RGB) and a model with `N` bands:
//!
//! - `N == C`: the filters are kept.
//! - `N < C`: every band gets the mean filter `M = mean_c W[:, c]`, scaled by `C / N`.
//! - `N > C`: bands `0..C` copy `W[:, 0..C]` and bands `C..N` get `M`; all scaled by `C / N`.
//!
//! The `C / N` factor keeps activations at their pretrained scale: an input whose bands all
//! carry the same image gives exactly the response the pretrained model gives to that image
//! in all of its `C` bands. (For `N < C` the brief's "average the RGB filters" alone would
//! shrink a grey image's response `C / N` times, so the scale applies there too.)

/// Adapts a first-convolution weight of shape `[out, C, kh, kw]` (row-major) to `bands` input
/// bands, returning the weight of shape `[out, bands, kh, kw]`.
///
/// # Panics
///
/// When `weight.len()` does not match `shape`, or `C` or `bands` is zero.
pub fn adapt_first_conv(weight: &[f32], shape: [usize; 4], bands: usize) -> Vec<f32> {
    let [out, c, kh, kw] = shape;
    assert!(c > 0 && bands > 0, "band counts must be positive");
    assert_eq!(
        weight.len(),
        out * c * kh * kw,
        "weight length does not match its shape"
    );
    if bands == c {
        return weight.to_vec();
    }
    let plane = kh * kw;
    let scale = c as f32 / bands as f32;
    let mut adapted = Vec::with_capacity(out * bands * plane);
    for filter in weight.chunks(c * plane) {
        let mean: Vec<f32> = (0..plane)
            .map(|k| (0..c).map(|b| filter[b * plane + k]).sum::<f32>() / c as f32)
            .collect();
        for band in 0..bands {
            let source = if bands > c && band < c {
                &filter[band * plane..(band + 1) * plane]
            } else {
                &mean[..]
            };
            adapted.extend(source.iter().map(|w| w * scale));
        }
    }
    adapted
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two filters over three bands, 1x1 kernels: [[1, 2, 6], [0, -3, 3]].
    const W: [f32; 6] = [1.0, 2.0, 6.0, 0.0, -3.0, 3.0];

    #[test]
    fn same_band_count_keeps_filters() {
        assert_eq!(adapt_first_conv(&W, [2, 3, 1, 1], 3), W.to_vec());
    }

    #[test]
    fn fewer_bands_get_the_scaled_mean() {
        // Means 3 and 0; one band scales by 3, two bands by 1.5.
        assert_eq!(adapt_first_conv(&W, [2, 3, 1, 1], 1), vec![9.0, 0.0]);
        assert_eq!(
            adapt_first_conv(&W, [2, 3, 1, 1], 2),
            vec![4.5, 4.5, 0.0, 0.0]
        );
    }

    #[test]
    fn more_bands_copy_rgb_then_the_mean_all_scaled() {
        let a = adapt_first_conv(&W, [2, 3, 1, 1], 6);
        assert_eq!(
            a,
            vec![0.5, 1.0, 3.0, 1.5, 1.5, 1.5, 0.0, -1.5, 1.5, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn band_constant_input_keeps_its_response() {
        // 3x3 kernels, so band planes must stay contiguous.
        let w: Vec<f32> = (0..2 * 3 * 9)
            .map(|i| ((i * 7) % 11) as f32 - 5.0)
            .collect();
        let response = |w: &[f32], bands: usize| -> Vec<f32> {
            w.chunks(bands * 9).map(|f| f.iter().sum::<f32>()).collect()
        };
        let rgb = response(&w, 3);
        for bands in [1, 2, 4, 6, 10] {
            let a = adapt_first_conv(&w, [2, 3, 3, 3], bands);
            for (x, y) in response(&a, bands).iter().zip(&rgb) {
                assert!((x - y).abs() < 1e-4, "{bands} bands: {x} vs {y}");
            }
        }
    }
}
