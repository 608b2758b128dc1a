//! Property tests: flips undo themselves, boxes stay inside, boxes follow masks, and the
//! thread count never changes a batch.

use autodl_api::{AugSample, Augmenter, Task};
use autodl_augment::{
    Affine, DEFAULT_MIN_VISIBILITY, Geometric, HFlip, IGNORE, NAMES, Pipeline, RandomResizedCrop,
    Step, VFlip, augment_batch, mixup, mosaic, preset, sample_seed, warp,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A random sample: noise image, mask with some ignored pixels, up to five boxes.
fn random_sample(w: u32, h: u32, bands: u32, seed: u64) -> AugSample {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = (w * h) as usize;
    let image = (0..n * bands as usize)
        .map(|_| rng.random_range(-2.0..2.0f32))
        .collect();
    let mask = (0..n)
        .map(|_| {
            if rng.random_bool(0.1) {
                IGNORE
            } else {
                rng.random_range(0..4)
            }
        })
        .collect();
    let nboxes = if w >= 2 && h >= 2 {
        rng.random_range(0..=5)
    } else {
        0
    };
    let boxes = (0..nboxes)
        .map(|_| {
            let x0 = rng.random_range(0.0..w as f32 - 1.0);
            let y0 = rng.random_range(0.0..h as f32 - 1.0);
            let x1 = rng.random_range(x0 + 0.5..=w as f32);
            let y1 = rng.random_range(y0 + 0.5..=h as f32);
            ([x0, y0, x1, y1], rng.random_range(0..3))
        })
        .collect();
    AugSample {
        width: w,
        height: h,
        bands,
        image,
        mask: Some(mask),
        boxes,
    }
}

/// Equal pixels and masks; boxes equal up to f32 rounding of `w - (w - x)`.
fn same_up_to_box_rounding(a: &AugSample, b: &AugSample) -> bool {
    let (mut a2, mut b2) = (a.clone(), b.clone());
    a2.boxes.clear();
    b2.boxes.clear();
    a2 == b2
        && a.boxes.len() == b.boxes.len()
        && a.boxes
            .iter()
            .zip(&b.boxes)
            .all(|((p, c), (q, d))| c == d && p.iter().zip(q).all(|(u, v)| (u - v).abs() <= 1e-4))
}

fn assert_consistent(s: &AugSample, what: &str) {
    let plane = (s.width * s.height) as usize;
    assert_eq!(
        s.image.len(),
        plane * s.bands as usize,
        "{what}: image size"
    );
    if let Some(m) = &s.mask {
        assert_eq!(m.len(), plane, "{what}: mask size");
    }
    for (b, _) in &s.boxes {
        assert!(
            b[0] >= 0.0
                && b[1] >= 0.0
                && b[2] <= s.width as f32
                && b[3] <= s.height as f32
                && b[0] < b[2]
                && b[1] < b[3],
            "{what}: box {b:?} outside {}x{}",
            s.width,
            s.height
        );
    }
}

/// A sample whose mask is 1 inside the box (integer corners) and 0 outside.
fn box_sample(w: u32, h: u32, b: [u32; 4]) -> AugSample {
    let n = (w * h) as usize;
    let mut mask = vec![0u32; n];
    for y in b[1]..b[3] {
        for x in b[0]..b[2] {
            mask[(y * w + x) as usize] = 1;
        }
    }
    AugSample {
        width: w,
        height: h,
        bands: 1,
        image: vec![0.5; n],
        mask: Some(mask),
        boxes: vec![(b.map(|v| v as f32), 1)],
    }
}

/// The bounding box `[x0, y0, x1, y1)` of the mask's class-1 pixels, and their centres.
fn mask_box(s: &AugSample) -> (Option<[f32; 4]>, Vec<(f32, f32)>) {
    let w = s.width as usize;
    let mut bb: Option<[f32; 4]> = None;
    let mut centres = Vec::new();
    let Some(mask) = s.mask.as_ref() else {
        return (bb, centres);
    };
    for (i, &v) in mask.iter().enumerate() {
        if v != 1 {
            continue;
        }
        let (x, y) = ((i % w) as f32, (i / w) as f32);
        centres.push((x + 0.5, y + 0.5));
        bb = Some(match bb {
            None => [x, y, x + 1.0, y + 1.0],
            Some(b) => [
                b[0].min(x),
                b[1].min(y),
                b[2].max(x + 1.0),
                b[3].max(y + 1.0),
            ],
        });
    }
    (bb, centres)
}

/// Checks the transformed box against the transformed mask: within a pixel for maps that keep
/// axes (and turn by multiples of 90 degrees), enclosing every class pixel's centre otherwise.
fn check_box_follows_mask(s: &AugSample, axis_aligned: bool, what: &str) {
    let Some(&(b, _)) = s.boxes.first() else {
        return;
    };
    let (mb, centres) = mask_box(s);
    for &(x, y) in &centres {
        assert!(
            x >= b[0] - 1e-3 && x <= b[2] + 1e-3 && y >= b[1] - 1e-3 && y <= b[3] + 1e-3,
            "{what}: mask pixel centre ({x}, {y}) outside box {b:?}"
        );
    }
    if axis_aligned && b[2] - b[0] >= 1.0 && b[3] - b[1] >= 1.0 {
        let mb = mb.unwrap_or_else(|| panic!("{what}: box {b:?} kept but mask empty"));
        for k in 0..4 {
            assert!(
                (mb[k] - b[k]).abs() <= 1.0,
                "{what}: mask box {mb:?} vs box {b:?}"
            );
        }
    }
}

/// The geometric augmenters with whether they keep axes; the custom ones cover output sizes
/// and a pure scale-and-translate affine.
fn geometric_cases() -> Vec<(&'static str, Box<dyn Geometric>, bool)> {
    vec![
        ("hflip", Box::new(HFlip), true),
        ("vflip", Box::new(VFlip), true),
        ("dihedral", Box::new(autodl_augment::Dihedral), true),
        (
            "random-resized-crop",
            Box::new(RandomResizedCrop::DEFAULT),
            true,
        ),
        (
            "random-resized-crop 32x24",
            Box::new(RandomResizedCrop {
                size: Some((32, 24)),
                ..RandomResizedCrop::DEFAULT
            }),
            true,
        ),
        ("zoom", Box::new(autodl_augment::Zoom::DEFAULT), true),
        (
            "scale-translate",
            Box::new(Affine {
                scale: 0.4,
                translate: 0.2,
                rotate_degrees: 0.0,
                shear_degrees: 0.0,
            }),
            true,
        ),
        ("affine", Box::new(Affine::DEFAULT), false),
        (
            "affine rotate",
            Box::new(Affine {
                rotate_degrees: 40.0,
                ..Affine::DEFAULT
            }),
            false,
        ),
        ("rotate", Box::new(autodl_augment::Rotate::DEFAULT), false),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn two_flips_are_the_identity(w in 1u32..40, h in 1u32..40, bands in 1u32..5, seed: u64) {
        let base = random_sample(w, h, bands, seed);
        for flip in [&HFlip as &dyn Augmenter, &VFlip] {
            let mut s = base.clone();
            flip.apply(&mut s, 1.0, seed);
            flip.apply(&mut s, 1.0, seed ^ 1);
            prop_assert!(same_up_to_box_rounding(&s, &base), "{:?} vs {:?}", s.boxes, base.boxes);
        }
        // The same through a pipeline, which chains both into one resampling.
        let mut s = base.clone();
        Pipeline::new(&[("hflip", 1.0), ("hflip", 1.0), ("vflip", 1.0), ("vflip", 1.0)], 1.0).unwrap().apply(&mut s, seed);
        prop_assert!(same_up_to_box_rounding(&s, &base));
    }

    #[test]
    fn boxes_stay_inside_after_any_transform(
        w in 2u32..48, h in 2u32..48, bands in 1u32..5, seed: u64, strength in 0.0f32..2.0
    ) {
        let base = random_sample(w, h, bands, seed);
        for name in NAMES {
            let mut s = base.clone();
            autodl_api::augmenter(name).unwrap().apply(&mut s, strength, seed);
            assert_consistent(&s, name);
        }
        let others = [1, 2, 3].map(|k| random_sample(w / k + 2, h + k, bands, seed ^ k as u64));
        let four = [base.clone(), others[0].clone(), others[1].clone(), others[2].clone()];
        let out = (w + h, h + 7);
        let m = mosaic(&four, out, seed);
        prop_assert_eq!((m.width, m.height), out);
        assert_consistent(&m, "mosaic");
        assert_consistent(&mixup(&base, &others[0], strength / 2.0), "mixup");
        for task in [Task::Detection, Task::PixelClassification] {
            let mut s = base.clone();
            Pipeline::preset("default", task, strength).unwrap().apply(&mut s, seed);
            assert_consistent(&s, "default preset");
        }
    }

    #[test]
    fn box_follows_its_rasterised_mask(
        w in 8u32..48, h in 8u32..48, fx in 0.0f32..1.0, fy in 0.0f32..1.0, fw in 0.1f32..0.6, fh in 0.1f32..0.6,
        seed: u64, strength in 0.1f32..1.5
    ) {
        let bw = ((fw * w as f32) as u32).max(2);
        let bh = ((fh * h as f32) as u32).max(2);
        let x0 = (fx * (w - bw) as f32) as u32;
        let y0 = (fy * (h - bh) as f32) as u32;
        let base = box_sample(w, h, [x0, y0, x0 + bw, y0 + bh]);
        for (name, aug, axis_aligned) in geometric_cases() {
            let mut s = base.clone();
            aug.apply(&mut s, strength, seed);
            check_box_follows_mask(&s, axis_aligned, name);
            // The same through the shared resampler with a custom visibility.
            if let Some(stage) = aug.plan(w, h, strength, seed) {
                let mut t = base.clone();
                warp(&mut t, &[stage], DEFAULT_MIN_VISIBILITY);
                prop_assert_eq!(&t, &s);
            }
        }
        // Chains: flips and crops keep axes; anything with the default affine does not.
        for (steps, axis_aligned) in [
            (vec![("dihedral", 1.0), ("hflip", 1.0), ("random-resized-crop", 1.0), ("zoom", 1.0), ("vflip", 1.0)], true),
            (vec![("random-resized-crop", 1.0), ("affine", 1.0), ("dihedral", 1.0), ("rotate", 1.0)], false),
        ] {
            let mut s = base.clone();
            Pipeline::new(&steps, strength).unwrap().apply(&mut s, seed);
            check_box_follows_mask(&s, axis_aligned, &format!("{steps:?}"));
        }
    }

    #[test]
    fn thread_count_does_not_change_a_batch(seed: u64, epoch in 0u64..5, first in 0u64..1000) {
        let mut steps = preset("default", Task::Detection).unwrap();
        steps.extend(NAMES.iter().map(|n| (*n, 0.5)));
        let pipeline = Pipeline::new(&steps, 1.0).unwrap();
        let base: Vec<AugSample> = (0..6).map(|i| random_sample(20 + i, 24 - i, 3, seed.wrapping_add(u64::from(i)))).collect();
        let run = |threads: usize| {
            let mut batch = base.clone();
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| augment_batch(&mut batch, &pipeline, seed, epoch, first));
            batch
        };
        let one = run(1);
        prop_assert_eq!(&one, &run(2));
        // And each sample depends only on its own index, not on the batch it came in.
        let mut single = base[3].clone();
        pipeline.apply(&mut single, sample_seed(seed, epoch, first + 3));
        prop_assert_eq!(&single, &one[3]);
    }
}

#[test]
fn steps_can_carry_custom_ranges() {
    let pipeline = Pipeline::from_steps(
        vec![(
            Step::geometric(RandomResizedCrop {
                size: Some((16, 8)),
                ..RandomResizedCrop::DEFAULT
            }),
            1.0,
        )],
        1.0,
    );
    let mut s = random_sample(40, 30, 2, 1);
    pipeline.apply(&mut s, 5);
    assert_eq!((s.width, s.height), (16, 8));
    assert_consistent(&s, "custom crop");
}
