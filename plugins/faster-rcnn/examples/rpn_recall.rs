//! The recall of a trained Faster R-CNN's region proposal network: the share of the
//! validation split's objects that one of an image's top 300 proposals (inference settings)
//! overlaps by IoU 0.5 or more.
//!
//! ```sh
//! cargo run --release -p autodl-faster-rcnn --example rpn_recall -- \
//!     runs/x/trials/faster-rcnn-efficientnet-lite0 ../shared/data/trees_voc
//! ```
//!
//! The first argument is a trained model folder (a trial's folder or `best-model/`), the
//! second the dataset it was trained on; its validation split is read as training read it
//! (the dataset's split files, or a 20 % random split with seed 0).

use std::path::PathBuf;
use std::process::ExitCode;

use autodl_api::{DataSpec, ModelMeta};
use autodl_faster_rcnn::sample::{TopN, recall};
use autodl_faster_rcnn::{FasterRcnn, FasterRcnnHead};
use autodl_nets::backboned::DetectorHead;
use autodl_train::det::load_data;
use autodl_train::model_dir::load_trained;
use autodl_train::params::text_param;
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};

/// Proposals per image the recall counts.
const PROPOSALS: usize = 300;

fn run(model_dir: PathBuf, data_dir: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    type B = Flex;
    let device = Default::default();
    // The backbone is built before the weights are read, so that a bad name is an error;
    // the record then replaces every weight.
    let meta = ModelMeta::load(&model_dir)?;
    let name = text_param(&meta.params, "backbone", &meta.backbone);
    let frozen = text_param(&meta.params, "frozen-bn", "false") == "true";
    let bb = autodl_nets::backboned::backbone::<B>(name, meta.bands, false, &device)?
        .with_frozen_bn(frozen);
    let (meta, net) =
        load_trained::<B, FasterRcnn<B>, _>(&model_dir, &device, |device, meta: &ModelMeta| {
            FasterRcnn::new(bb.clone(), meta.classes.len(), &meta.params, device)
        })?;
    let mut head = FasterRcnnHead::from_params(&meta.params)?;
    head.test = TopN {
        pre_nms: head.test.pre_nms.max(PROPOSALS),
        post_nms: PROPOSALS,
    };
    let spec = DataSpec {
        root: data_dir,
        format: None,
        images_dir: None,
        val_fraction: 0.2,
        test_fraction: 0.0,
        ignore_index: None,
        fail_on_bad_sample: false,
        bands: None,
    };
    let data = load_data(&spec, 0)?;
    let (mut hit, mut total) = (0, 0);
    for item in &data.val {
        // Pad to multiples of 32 with zeros (the normalised mean), as inference does.
        let (w, h) = (item.width.div_ceil(32) * 32, item.height.div_ceil(32) * 32);
        let mut pixels = vec![0f32; data.bands * w * h];
        for b in 0..data.bands {
            for y in 0..item.height {
                let from = (b * item.height + y) * item.width;
                let to = (b * h + y) * w;
                pixels[to..to + item.width].copy_from_slice(&item.image[from..from + item.width]);
            }
        }
        let window =
            Tensor::<B, 4>::from_data(TensorData::new(pixels, [1, data.bands, h, w]), &device);
        let (found, _, _) = net.propose(&head, window, (item.width, item.height));
        let objects: Vec<[f32; 4]> = item.boxes.iter().map(|(b, _)| *b).collect();
        let (x, n) = recall(&found, &objects);
        hit += x;
        total += n;
    }
    println!(
        "rpn recall@{PROPOSALS} (IoU 0.5): {hit}/{total} = {:.3} over {} validation images",
        hit as f64 / total.max(1) as f64,
        data.val.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(model_dir), Some(data_dir), None) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: rpn_recall MODEL_DIR DATASET_DIR");
        return ExitCode::from(2);
    };
    match run(model_dir, data_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
