//! Validation of a detector through the inference path `autodl predict` takes: the loss per
//! window and the merged detections of every image, once per NMS threshold tried.

use autodl_api::PluginError;
use autodl_detection::ScoredBox;
use burn::tensor::backend::Backend;

use super::data::{DetItem, clip_boxes};
use super::detector::Detector;
use crate::infer::{self, View};

/// The boxes kept on one image.
pub(crate) type ImageBoxes = Vec<ScoredBox>;

/// NMS IoU thresholds tried on the validation split. Dense, rarely overlapping objects (tree
/// crowns: DeepForest uses 0.05) want a low one, crowds of overlapping objects a high one; the
/// best for the data is kept with the model.
pub(crate) const NMS_CHOICES: [f32; 4] = [0.2, 0.35, 0.5, 0.65];

/// Validation loss and detections of every item, once per threshold of [`NMS_CHOICES`],
/// through the inference path `autodl predict` takes ([`infer::detect_windows`] and
/// [`infer::merge_boxes`]). The loss is taken per window, on the boxes the window sees.
pub(crate) fn evaluate<B: Backend, H: Sync, D: Detector<B, H>>(
    model: &D,
    head: &H,
    items: &[DetItem],
    bands: usize,
    tile: usize,
    device: &B::Device,
) -> Result<(f64, Vec<Vec<ImageBoxes>>), PluginError> {
    let mut dets = vec![Vec::with_capacity(items.len()); NMS_CHOICES.len()];
    let (mut loss_sum, mut loss_n) = (0.0, 0usize);
    for it in items {
        let view = View::normalised(it.width, it.height, bands, &it.image);
        let mut found = vec![Vec::new(); NMS_CHOICES.len()];
        let windows = infer::detect_windows(
            model,
            head,
            view,
            tile,
            &NMS_CHOICES,
            |win| Some(clip_boxes(&it.boxes, (win.x0, win.y0, win.w, win.h))),
            device,
            |_, detected| {
                if let Some(loss) = detected.loss {
                    loss_sum += loss;
                    loss_n += 1;
                }
                for (f, boxes) in found.iter_mut().zip(detected.boxes) {
                    f.extend(boxes);
                }
            },
        )?;
        for ((per_nms, f), &nms_iou) in dets.iter_mut().zip(found).zip(&NMS_CHOICES) {
            per_nms.push(infer::merge_boxes(f, windows, nms_iou));
        }
    }
    Ok((loss_sum / loss_n.max(1) as f64, dets))
}
