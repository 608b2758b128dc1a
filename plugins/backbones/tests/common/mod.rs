//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};

/// The CPU backend, without autodiff (evaluation mode).
pub type Cpu = burn::backend::Flex;
/// The CPU backend with autodiff (training mode).
pub type Train = burn::backend::Autodiff<burn::backend::Flex>;

pub fn device() -> burn::backend::flex::FlexDevice {
    burn::backend::flex::FlexDevice
}

/// The bundled EfficientNet-Lite0 weights.
pub fn lite0_weights() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/efficientnet-lite0.safetensors");
    assert!(
        path.is_file(),
        "bundled weights missing: {}",
        path.display()
    );
    path
}

/// A file under the repository's `tests/fixtures/backbones/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/backbones")
        .join(name)
}

/// A photo from `../shared/data/photos/`, failing clearly when the shared folder is absent.
pub fn photo(name: &str) -> PathBuf {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/photos"
    ))
    .join(name);
    assert!(
        path.is_file(),
        "{} is missing: the photo tests need the shared data folder next to the repository (../shared/data/photos)",
        path.display()
    );
    path
}

/// The photo as EfficientNet-Lite0 expects it: short side resized to 256, centre crop 224,
/// `(x - 127) / 128`.
pub fn lite0_input<B: burn::tensor::backend::Backend>(
    path: &Path,
    device: &B::Device,
) -> Tensor<B, 4> {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let (w, h) = img.dimensions();
    let scale = 256.0 / w.min(h) as f64;
    let (w, h) = (
        (w as f64 * scale).round() as u32,
        (h as f64 * scale).round() as u32,
    );
    let img = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
    let (left, top) = ((w - 224) / 2, (h - 224) / 2);
    let mut data = vec![0f32; 3 * 224 * 224];
    for y in 0..224 {
        for x in 0..224 {
            let p = img.get_pixel(left + x, top + y);
            for c in 0..3 {
                data[(c * 224 + y as usize) * 224 + x as usize] = (p[c] as f32 - 127.0) / 128.0;
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [1, 3, 224, 224]), device)
}

/// A smooth deterministic pattern `[n, bands, h, w]` in about [-1, 1].
pub fn pattern<B: burn::tensor::backend::Backend>(
    shape: [usize; 4],
    device: &B::Device,
) -> Tensor<B, 4> {
    let [n, c, h, w] = shape;
    let mut data = Vec::with_capacity(n * c * h * w);
    for i in 0..n {
        for b in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let (i, b, y, x) = (i as f64, b as f64 + 1.0, y as f64 + 1.0, x as f64 + 1.0);
                    data.push(
                        (0.9 * (0.021 * y * b + 0.013 * x + i).sin()
                            * (0.017 * x * (b + 1.0) - 0.011 * y).cos())
                            as f32,
                    );
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(data, shape), device)
}

pub fn to_vec<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

/// Largest absolute difference.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Class indices by decreasing logit.
pub fn ranking(logits: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx
}
