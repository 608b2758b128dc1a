//! `autodl weights import` and `list`, driving the real binary: a ResNet-18 checkpoint written
//! here as PyTorch writes one (zip format, some tensors non-contiguous) is imported, loads
//! through the normal loader with torchvision's logits, and is then offered to the tuner.

// Test code: a failure in a fixture builder should stop the test.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use autodl_backbones::BackboneConfig;
use autodl_backend::burn::backend::Flex;
use autodl_backend::burn::backend::flex::FlexDevice;
use autodl_backend::burn::tensor::{Tensor, TensorData};
use serde_json::Value;

/// Runs autodl with no weights folder of the user's: `AUTODL_WEIGHTS_DIR` as given, the XDG
/// folder an empty one.
fn autodl(args: &[&str], weights_dir: Option<&Path>) -> Output {
    let empty = std::env::temp_dir().join("autodl-weights-test-no-data-home");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autodl"));
    cmd.args(args)
        .env_remove("AUTODL_WEIGHTS_DIR")
        .env("XDG_DATA_HOME", &empty);
    if let Some(dir) = weights_dir {
        cmd.env("AUTODL_WEIGHTS_DIR", dir);
    }
    cmd.output().expect("run autodl")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// The deterministic weights of `tests/fixtures/backbones/resnet18_reference.py`, bit for bit.

/// `g` in [-1, 1] for element `i` of the tensor `name`.
fn g(name: &str, i: usize) -> f32 {
    let t = name
        .bytes()
        .enumerate()
        .map(|(j, b)| (j as u64 + 1) * u64::from(b))
        .sum::<u64>()
        % 997;
    let h = ((i as u64) * 2_654_435_761 + t * 40503) % (1 << 32);
    let k = ((h >> 16) % 2001) as i64 - 1000;
    k as f32 / 1000.0
}

/// The values of tensor `name` of `shape`, in C order.
fn values(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let leaf = name.rsplit('.').next().unwrap();
    (0..n)
        .map(|i| {
            let g = g(name, i);
            if shape.len() >= 2 {
                let fan_in: usize = shape[1..].iter().product();
                g * (3.0f32 / fan_in as f32).sqrt()
            } else if name.starts_with("fc.") {
                0.1 * g
            } else {
                match leaf {
                    "weight" => 1.0 + 0.25 * g,
                    "bias" | "running_mean" => 0.1 * g,
                    "running_var" => 1.0 + 0.5 * g,
                    _ => panic!("{name}"),
                }
            }
        })
        .collect()
}

/// torchvision's resnet18 state dict: names and shapes in its order.
fn resnet18_entries() -> Vec<(String, Vec<usize>)> {
    let mut v = Vec::new();
    let bn = |v: &mut Vec<(String, Vec<usize>)>, name: &str, c: usize| {
        for p in ["weight", "bias", "running_mean", "running_var"] {
            v.push((format!("{name}.{p}"), vec![c]));
        }
        v.push((format!("{name}.num_batches_tracked"), vec![]));
    };
    v.push(("conv1.weight".to_owned(), vec![64, 3, 7, 7]));
    bn(&mut v, "bn1", 64);
    for (l, (cin, cout)) in [(64, 64), (64, 128), (128, 256), (256, 512)]
        .into_iter()
        .enumerate()
    {
        for b in 0..2 {
            let p = format!("layer{}.{b}", l + 1);
            let input = if b == 0 { cin } else { cout };
            v.push((format!("{p}.conv1.weight"), vec![cout, input, 3, 3]));
            bn(&mut v, &format!("{p}.bn1"), cout);
            v.push((format!("{p}.conv2.weight"), vec![cout, cout, 3, 3]));
            bn(&mut v, &format!("{p}.bn2"), cout);
            if b == 0 && l > 0 {
                v.push((format!("{p}.downsample.0.weight"), vec![cout, cin, 1, 1]));
                bn(&mut v, &format!("{p}.downsample.1"), cout);
            }
        }
    }
    v.push(("fc.weight".to_owned(), vec![1000, 512]));
    v.push(("fc.bias".to_owned(), vec![1000]));
    v
}

/// A storage: torch's class name and its bytes.
struct Storage {
    class: &'static str,
    numel: usize,
    bytes: Vec<u8>,
}

/// A tensor in the pickle: its storage's index, offset, size and stride.
struct Entry {
    name: String,
    storage: usize,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

fn contiguous(shape: &[usize]) -> Vec<usize> {
    let mut stride = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        stride[d] = stride[d + 1] * shape[d + 1];
    }
    stride
}

/// `values` (C order) laid out with `stride`.
fn strided(values: &[f32], shape: &[usize], stride: &[usize]) -> Vec<f32> {
    let len = 1 + shape
        .iter()
        .zip(stride)
        .map(|(d, s)| (d - 1) * s)
        .sum::<usize>();
    let mut out = vec![0.0; len];
    for (flat, &v) in values.iter().enumerate() {
        let (mut rem, mut at) = (flat, 0);
        for d in (0..shape.len()).rev() {
            at += (rem % shape[d]) * stride[d];
            rem /= shape[d];
        }
        out[at] = v;
    }
    out
}

fn f32_storage(values: &[f32]) -> Storage {
    Storage {
        class: "FloatStorage",
        numel: values.len(),
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// ResNet-18's state dict as PyTorch stores it, with some of what real files have:
/// `conv1.weight` channels-last and `fc.weight` transposed (both non-contiguous), `bn1`'s
/// weight and bias in one storage (the bias at an offset), running variances in float64 and
/// `num_batches_tracked` in int64.
fn resnet18_storages() -> (Vec<Storage>, Vec<Entry>) {
    let (mut storages, mut entries) = (Vec::new(), Vec::new());
    for (name, shape) in resnet18_entries() {
        let v = values_or_empty(&name, &shape);
        let (storage, offset, stride) = match name.as_str() {
            "conv1.weight" => {
                let stride = vec![147, 1, 21, 3];
                (Some(f32_storage(&strided(&v, &shape, &stride))), 0, stride)
            }
            "fc.weight" => {
                let stride = vec![1, 1000];
                (Some(f32_storage(&strided(&v, &shape, &stride))), 0, stride)
            }
            "bn1.weight" => {
                let mut both = v.clone();
                both.extend(values("bn1.bias", &shape));
                (Some(f32_storage(&both)), 0, vec![1])
            }
            // In bn1.weight's storage.
            "bn1.bias" => (None, 64, vec![1]),
            n if n.ends_with("running_var") => {
                let storage = Storage {
                    class: "DoubleStorage",
                    numel: v.len(),
                    bytes: v.iter().flat_map(|&x| f64::from(x).to_le_bytes()).collect(),
                };
                (Some(storage), 0, vec![1])
            }
            n if n.ends_with("num_batches_tracked") => {
                let storage = Storage {
                    class: "LongStorage",
                    numel: 1,
                    bytes: 0i64.to_le_bytes().to_vec(),
                };
                (Some(storage), 0, Vec::new())
            }
            _ => (Some(f32_storage(&v)), 0, contiguous(&shape)),
        };
        if let Some(storage) = storage {
            storages.push(storage);
        }
        entries.push(Entry {
            name: format!("module.{name}"),
            storage: storages.len() - 1,
            offset,
            size: shape,
            stride,
        });
    }
    (storages, entries)
}

fn values_or_empty(name: &str, shape: &[usize]) -> Vec<f32> {
    if name.ends_with("num_batches_tracked") {
        Vec::new()
    } else {
        values(name, shape)
    }
}

/// The pickle opcodes `torch.save` writes (protocol 2).
#[derive(Default)]
struct Pickler(Vec<u8>);

impl Pickler {
    fn op(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    fn string(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
    }
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0.extend(format!("{module}\n{name}\n").as_bytes());
    }
    fn int(&mut self, v: usize) {
        if v < 256 {
            self.op(&[b'K', v as u8]);
        } else {
            self.0.push(b'J');
            self.0.extend((v as i32).to_le_bytes());
        }
    }
    fn ints(&mut self, v: &[usize]) {
        self.op(b"(");
        for &x in v {
            self.int(x);
        }
        self.op(b"t");
    }
}

/// A PyTorch zip checkpoint `{"epoch": 1, "state_dict": OrderedDict(...)}`.
fn write_pth(path: &Path, storages: &[Storage], entries: &[Entry]) {
    let mut p = Pickler::default();
    p.op(&[0x80, 2, b'}', b'(']);
    p.string("epoch");
    p.int(1);
    p.string("state_dict");
    p.global("collections", "OrderedDict");
    p.op(b")R(");
    for e in entries {
        p.string(&e.name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b"((");
        p.string("storage");
        p.global("torch", storages[e.storage].class);
        p.string(&e.storage.to_string());
        p.string("cpu");
        p.int(storages[e.storage].numel);
        p.op(b"tQ");
        p.int(e.offset);
        p.ints(&e.size);
        p.ints(&e.stride);
        p.op(&[0x89]);
        p.global("collections", "OrderedDict");
        p.op(b")RtR");
    }
    p.op(b"uu.");

    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut put = |name: &str, bytes: &[u8]| {
        zip.start_file(format!("checkpoint/{name}"), stored)
            .unwrap();
        zip.write_all(bytes).unwrap();
    };
    put("data.pkl", &p.0);
    put("byteorder", b"little");
    for (i, st) in storages.iter().enumerate() {
        put(&format!("data/{i}"), &st.bytes);
    }
    put("version", b"3\n");
    zip.finish().unwrap();
}

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/backbones/resnet18_reference.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The input of the reference: 1x3x64x64, as in the EfficientNet-Lite0 golden test.
fn pattern() -> Tensor<Flex, 4> {
    let (c, h, w) = (3, 64, 64);
    let mut data = Vec::with_capacity(c * h * w);
    for b in 0..c {
        for y in 0..h {
            for x in 0..w {
                let (b, y, x) = (b as f64 + 1.0, y as f64 + 1.0, x as f64 + 1.0);
                data.push(
                    (0.9 * (0.021 * y * b + 0.013 * x).sin()
                        * (0.017 * x * (b + 1.0) - 0.011 * y).cos()) as f32,
                );
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [1, c, h, w]), &FlexDevice)
}

fn to_vec<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The ResNet-18 checkpoint in `dir`; kept at `$AUTODL_KEEP_PTH` when set, for checking it
/// with `resnet18_reference.py --check`.
fn resnet18_pth(dir: &Path) -> PathBuf {
    let path = dir.join("resnet18-deterministic.pth");
    let (storages, entries) = resnet18_storages();
    write_pth(&path, &storages, &entries);
    if let Some(keep) = std::env::var_os("AUTODL_KEEP_PTH") {
        std::fs::copy(&path, keep).unwrap();
    }
    path
}

/// The backbones the tuner offers U-Net, from `autodl plugins`.
fn tuned(weights: &Path) -> String {
    let o = autodl(&["plugins"], Some(weights));
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    let mut lines = out.lines().skip_while(|l| !l.starts_with("network unet "));
    lines
        .nth(1)
        .and_then(|l| l.split_once("here): "))
        .map(|(_, b)| b.to_owned())
        .unwrap_or_else(|| panic!("no tuned backbones for unet in\n{out}"))
}

#[test]
fn imported_resnet18_loads_with_torchvisions_logits_and_is_tuned() {
    let dir = tempfile::tempdir().unwrap();
    let pth = resnet18_pth(dir.path());
    let weights = dir.path().join("weights");
    let o = autodl(&["weights", "import", s(&pth), "--dir", s(&weights)], None);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("resnet18 weights (torchvision naming, 102 tensors, 11.7 M parameters, a 1000-class classifier)"),
        "{out}"
    );
    // Written elsewhere than the weights folder: the output says how to use it.
    assert!(out.contains("AUTODL_WEIGHTS_DIR="), "{out}");
    let file = weights.join("resnet18.safetensors");
    assert_eq!(
        std::fs::read_dir(&weights).unwrap().count(),
        1,
        "only {} is left",
        file.display()
    );

    // The normal loader reads it, and ResNet-18 gives torchvision's numbers.
    let reference = reference();
    let tol = reference["tolerance"].as_f64().unwrap() as f32;
    let model = BackboneConfig::new("resnet18", 3)
        .with_weights(&file)
        .init::<Flex>(&FlexDevice)
        .unwrap();
    let x = pattern();
    let logits = to_vec(model.classify(x.clone()).expect("a classifier"));
    let first = floats(&reference["logits_first"]);
    let d = max_diff(&logits[..first.len()], &first);
    assert!(d <= tol, "first logits differ by {d}");
    let top5: Vec<usize> = reference["top5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    assert_eq!(order[..5], top5[..], "top-5 classes");
    let top: Vec<f32> = top5.iter().map(|&i| logits[i]).collect();
    let d_top = max_diff(&top, &floats(&reference["logits_top5"]));
    assert!(d_top <= tol, "top-5 logits differ by {d_top}");
    let sum: f64 = logits.iter().map(|&v| f64::from(v)).sum();
    let ref_sum = reference["logits_sum"].as_f64().unwrap();
    assert!(
        (sum - ref_sum).abs() <= 1e-2,
        "logit sums {sum} vs {ref_sum}"
    );
    for (f, r) in model
        .features(x)
        .into_iter()
        .zip(reference["features"].as_array().unwrap())
    {
        let stride = r["stride"].as_u64().unwrap();
        let v = to_vec(f);
        let mean_abs = v.iter().map(|&x| f64::from(x.abs())).sum::<f64>() / v.len() as f64;
        let want = r["mean_abs"].as_f64().unwrap();
        assert!(
            (mean_abs - want).abs() <= f64::from(tol),
            "stride {stride}: mean |x| {mean_abs} vs {want}"
        );
        let first = floats(&r["first"]);
        let d = max_diff(&v[..first.len()], &first);
        assert!(d <= tol, "stride {stride}: first values differ by {d}");
    }
    eprintln!("max |logit diff| against torchvision: {d} (first 20), {d_top} (top 5)");

    // With the folder as the weights folder, ResNet-18 starts pretrained and is tuned.
    assert_eq!(tuned(&weights), "efficientnet-lite0, resnet18");
    let o = autodl(&["weights", "list"], Some(&weights));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in\n{out}"))
            .to_owned()
    };
    assert!(line("resnet18").ends_with(s(&file)), "{out}");
    assert!(line("resnet34").contains("none — random init"), "{out}");
    assert!(out.contains("autodl weights import"), "{out}");

    // An existing file is kept without --force, replaced with it.
    let before = std::fs::read(&file).unwrap();
    let o = autodl(&["weights", "import", s(&pth)], Some(&weights));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("already exists") && text(&o).contains("--force"),
        "{}",
        text(&o)
    );
    let o = autodl(&["weights", "import", s(&pth), "--force"], Some(&weights));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("resnet18 now starts pretrained"), "{out}");
    assert!(
        std::fs::read(&file).unwrap() == before,
        "the same checkpoint gives the same file"
    );

    // Named as another backbone, the first tensor it lacks is named, and nothing is written.
    let other = dir.path().join("other");
    let o = autodl(
        &[
            "weights",
            "import",
            s(&pth),
            "--backbone",
            "resnet34",
            "--dir",
            s(&other),
        ],
        None,
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("lack tensor `layer1.2.conv1.weight` that resnet34 needs")
            && out.contains(s(&pth)),
        "{out}"
    );
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 0, "{out}");
}

#[test]
fn an_unrecognised_checkpoint_says_what_it_holds_and_the_names_known() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("encoder.pth");
    let shape = [2usize, 3];
    let storages = [f32_storage(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])];
    let entries = [Entry {
        name: "encoder.weight".to_owned(),
        storage: 0,
        offset: 0,
        size: shape.to_vec(),
        stride: contiguous(&shape),
    }];
    write_pth(&pth, &storages, &entries);
    let o = autodl(
        &["weights", "import", s(&pth), "--dir", s(dir.path())],
        None,
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("cannot tell which backbone")
            && out.contains("encoder.weight")
            && out.contains("resnet18, resnet34, resnet50, mobilenetv2")
            && out.contains("--backbone"),
        "{out}"
    );
}

#[test]
fn an_unreadable_checkpoint_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("resnet18.pth");
    std::fs::write(&garbage, b"<html>not a checkpoint</html>").unwrap();
    let missing = dir.path().join("missing.pth");
    for (file, why) in [
        (&garbage, "not a PyTorch checkpoint"),
        (&missing, "No such file"),
    ] {
        let o = autodl(
            &["weights", "import", s(file), "--dir", s(dir.path())],
            None,
        );
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{out}");
        assert!(
            out.contains("cannot read checkpoint") && out.contains(s(file)) && out.contains(why),
            "{out}"
        );
    }
    let o = autodl(
        &["weights", "import", s(&garbage), "--backbone", "vgg16"],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("unknown backbone `vgg16`"),
        "{}",
        text(&o)
    );
}
