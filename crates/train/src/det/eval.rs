//! Validation of a detector through the inference path `autodl predict` takes: the loss per
//! window and the merged detections of every image, once per NMS threshold tried.

use autodl_api::PluginError;
use autodl_detection::ScoredBox;
use burn::tensor::backend::Backend;

use super::data::{DetItem, clip_boxes};
use super::loss::{LossSetup, det_loss};
use super::net::DetNet;
use crate::infer::{self, View, WindowOutput};
use crate::loss::scalar;

/// The boxes kept on one image.
pub(crate) type ImageBoxes = Vec<ScoredBox>;

/// NMS IoU thresholds tried on the validation split. Dense, rarely overlapping objects (tree
/// crowns: DeepForest uses 0.05) want a low one, crowds of overlapping objects a high one; the
/// best for the data is kept with the model.
pub(crate) const NMS_CHOICES: [f32; 4] = [0.2, 0.35, 0.5, 0.65];

/// Validation loss and detections of every item, once per threshold of [`NMS_CHOICES`],
/// through the inference path `autodl predict` takes ([`infer::detect_windows`] and
/// [`infer::window_boxes`], [`infer::merge_boxes`]). The loss is taken per window, on the boxes the window sees.
pub(crate) fn evaluate<B: Backend, M: DetNet<B>>(
    model: &M,
    items: &[DetItem],
    bands: usize,
    tile: usize,
    setup: &LossSetup<'_>,
    device: &B::Device,
) -> Result<(f64, Vec<Vec<ImageBoxes>>), PluginError> {
    let mut dets = vec![Vec::with_capacity(items.len()); NMS_CHOICES.len()];
    let (mut loss_sum, mut loss_n) = (0.0, 0usize);
    for it in items {
        let view = View::normalised(it.width, it.height, bands, &it.image);
        let mut found = vec![Vec::new(); NMS_CHOICES.len()];
        let windows = infer::detect_windows(
            model,
            view,
            tile,
            setup.opts,
            setup.anchors,
            device,
            |o: &WindowOutput, out| {
                let win = o.window;
                let boxes = clip_boxes(&it.boxes, (win.x0, win.y0, win.w, win.h));
                loss_sum += scalar(det_loss(out, &[boxes], setup, device));
                loss_n += 1;
                for (f, &nms_iou) in found.iter_mut().zip(&NMS_CHOICES) {
                    f.extend(infer::window_boxes(o, setup.opts, nms_iou));
                }
            },
        )?;
        for ((per_nms, f), &nms_iou) in dets.iter_mut().zip(found).zip(&NMS_CHOICES) {
            per_nms.push(infer::merge_boxes(f, windows, nms_iou));
        }
    }
    Ok((loss_sum / loss_n.max(1) as f64, dets))
}
