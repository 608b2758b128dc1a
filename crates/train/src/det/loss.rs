//! The anchor-head detection loss: anchors matched to the objects, then the family's
//! classification and box losses over the matched anchors.

use autodl_detection::loss::{
    decode, giou_loss, hard_negative_weights, sigmoid_focal_loss, smooth_l1, softmax_cross_entropy,
};
use autodl_detection::{Assignment, Box4, match_anchors};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rayon::prelude::*;

use super::anchor::AnchorHead;
use super::net::{BoxLoss, ClassLoss, DetOutput};

/// The detection loss of a batch, divided by the number of positive anchors (at least 1).
pub(crate) fn det_loss<B: Backend>(
    out: DetOutput<B>,
    boxes: &[Vec<(Box4, usize)>],
    setup: &AnchorHead,
    device: &B::Device,
) -> Tensor<B, 1> {
    let anchors = setup.anchors.generate(&out.levels);
    let [n, a, k] = out.logits.dims();
    debug_assert_eq!(
        a,
        anchors.len(),
        "the head's anchor count differs from the anchor generator's"
    );
    let assignments: Vec<Vec<Assignment>> = boxes
        .par_iter()
        .map(|b| {
            let objects: Vec<Box4> = b.iter().map(|(x, _)| *x).collect();
            match_anchors(&anchors, &objects, &setup.opts.matching)
        })
        .collect();
    let giou = matches!(setup.opts.box_loss, BoxLoss::Giou);
    let mut positive = vec![0f32; n * a];
    let mut box_target = vec![0f32; n * a * 4];
    let mut labels = vec![0i64; n * a];
    for (i, assign) in assignments.iter().enumerate() {
        for (j, m) in assign.iter().enumerate() {
            let at = i * a + j;
            match *m {
                Assignment::Object(g) => {
                    let (b, c) = boxes[i][g];
                    positive[at] = 1.0;
                    labels[at] = c as i64 + 1;
                    let t = if giou {
                        b
                    } else {
                        setup.opts.coder.encode(&anchors[j], &b)
                    };
                    box_target[4 * at..4 * at + 4].copy_from_slice(&t);
                }
                Assignment::Ignore => labels[at] = -1,
                Assignment::Background => {}
            }
        }
    }
    let npos = positive.iter().sum::<f32>().max(1.0);
    let pos = Tensor::<B, 2>::from_data(TensorData::new(positive, [n, a]), device);
    let target = Tensor::<B, 3>::from_data(TensorData::new(box_target, [n, a, 4]), device);
    let box_loss = match setup.opts.box_loss {
        BoxLoss::SmoothL1 { beta } => smooth_l1(out.deltas, target, pos, beta),
        BoxLoss::Giou => {
            let flat: Vec<f32> = anchors.iter().flatten().copied().collect();
            let anchor_t = Tensor::<B, 3>::from_data(TensorData::new(flat, [1, a, 4]), device);
            giou_loss(
                decode(anchor_t, out.deltas, setup.opts.coder.weights),
                target,
                pos,
            )
        }
    };
    let class_loss = match setup.opts.class_loss {
        ClassLoss::Focal { alpha, gamma } => {
            let mut one_hot = vec![0f32; n * a * k];
            let mut weight = vec![1f32; n * a];
            for (at, &l) in labels.iter().enumerate() {
                if l < 0 {
                    weight[at] = 0.0;
                } else if l > 0 && (l as usize) <= k {
                    one_hot[at * k + l as usize - 1] = 1.0;
                }
            }
            let one_hot = Tensor::<B, 3>::from_data(TensorData::new(one_hot, [n, a, k]), device);
            let weight = Tensor::<B, 2>::from_data(TensorData::new(weight, [n, a]), device);
            sigmoid_focal_loss(out.logits, one_hot, weight, alpha, gamma)
        }
        ClassLoss::HardNegative { ratio } => {
            let label_t = Tensor::<B, 2, Int>::from_data(
                TensorData::new(
                    labels.iter().map(|&l| l.max(0)).collect::<Vec<i64>>(),
                    [n, a],
                ),
                device,
            );
            let ce = softmax_cross_entropy(out.logits, label_t);
            let host: Vec<f32> = ce.clone().detach().into_data().iter::<f32>().collect();
            let weights = hard_negative_weights(&host, &labels, a, ratio, 16);
            (ce * Tensor::<B, 2>::from_data(TensorData::new(weights, [n, a]), device)).sum()
        }
    };
    (class_loss + box_loss) / npos as f64
}
