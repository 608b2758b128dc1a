use autodl_augment::*;
struct Instant(f64);
impl Instant {
    fn now() -> Self { Instant(cpu()) }
    fn elapsed(&self) -> std::time::Duration { std::time::Duration::from_secs_f64(cpu() - self.0) }
}
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
fn main() {
    let (w, h) = (400u32, 400u32);
    let n = (w * h) as usize;
    let base = AugSample { width: w, height: h, bands: 3, image: (0..3 * n).map(|i| (i % 977) as f32).collect(), mask: None, boxes: vec![] };
    let cases: Vec<(&str, Vec<Stage>)> = vec![
        ("rrc", vec![Stage::new(Affine2::translate(-10.0, -5.0).then(&Affine2::scale(1.1, 1.05)), (w, h), (384, 384))]),
        ("rot", vec![Stage::new(Affine2::translate(-200.0, -200.0).then(&Affine2::rotate(0.2)).then(&Affine2::translate(192.0, 192.0)), (w, h), (384, 384))]),
        ("rrc+rot", vec![Stage::new(Affine2::translate(-10.0, -5.0).then(&Affine2::scale(1.1, 1.05)), (w, h), (384, 384)),
                         Stage::new(Affine2::translate(-192.0, -192.0).then(&Affine2::rotate(0.2)).then(&Affine2::translate(192.0, 192.0)), (384, 384), (384, 384))]),
        ("flip", vec![dihedral_stage(w, h, 5)]),
    ];
    let only = std::env::args().nth(1).unwrap_or_default();
    for (name, st) in cases {
        if !only.is_empty() && name != only { continue; }
        let mut s = base.clone();
        let reps = 1000;
        let t = Instant::now();
        for _ in 0..reps {
            s.image.clone_from(&base.image); s.width = w; s.height = h;
            warp_pixels(&mut s, &st);
        }
        println!("{name}: {:.3} ms", t.elapsed().as_secs_f64() * 1e3 / reps as f64);
    }
    if !only.is_empty() && only != "photo" { return; }
    for (name, aug) in [("noise", &GaussianNoise::DEFAULT as &dyn Augmenter), ("sathue", &SaturationHue::DEFAULT), ("bc", &BrightnessContrast)] {
        let mut s = base.clone();
        let t = Instant::now();
        for i in 0..300 { aug.apply(&mut s, 1.0, i); }
        println!("{name}: {:.3} ms", t.elapsed().as_secs_f64() * 1e3 / 300.0);
    }
}
