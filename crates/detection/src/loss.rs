//! Detection losses as Burn tensors. Each returns the *sum* over its elements, so that the
//! caller can divide by the number of positive anchors (or locations), as RetinaNet, SSD and
//! FCOS do.

use burn::tensor::activation::{log_softmax, relu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Sigmoid focal loss (Lin et al., 2017) over `[N, A, C]` logits and 0/1 `targets`, each
/// anchor weighted by `weights` (`[N, A]`: 0 for ignored anchors).
pub fn sigmoid_focal_loss<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 3>,
    weights: Tensor<B, 2>,
    alpha: f32,
    gamma: f32,
) -> Tensor<B, 1> {
    let p = sigmoid(logits.clone());
    // Binary cross-entropy with logits, written to stay finite for large |x|.
    let ce =
        relu(logits.clone()) - logits.clone() * targets.clone() + logits.abs().neg().exp().log1p();
    let p_t = p.clone() * targets.clone()
        + (p.neg().add_scalar(1.0)) * (targets.clone().neg().add_scalar(1.0));
    let modulator = p_t.neg().add_scalar(1.0).clamp_min(0.0).powf_scalar(gamma);
    let alpha_t = targets.clone() * alpha + targets.neg().add_scalar(1.0) * (1.0 - alpha);
    (ce * modulator * alpha_t * weights.unsqueeze_dim::<3>(2)).sum()
}

/// Smooth-L1 (Huber) loss between `[N, A, 4]` deltas on the anchors `mask` (`[N, A]`) selects;
/// `beta = 0` is plain L1.
pub fn smooth_l1<B: Backend>(
    pred: Tensor<B, 3>,
    target: Tensor<B, 3>,
    mask: Tensor<B, 2>,
    beta: f32,
) -> Tensor<B, 1> {
    let d = (pred - target).abs();
    let per = if beta > 0.0 {
        let q = d.clone().clamp_max(beta);
        q.clone().square() * (0.5 / beta) + (d - q)
    } else {
        d
    };
    (per * mask.unsqueeze_dim::<3>(2)).sum()
}

/// Boxes from `[N, A, 4]` deltas on `anchors` (`[1 or N, A, 4]`), the tensor form of
/// [`crate::BoxCoder::decode`], differentiable in the deltas.
pub fn decode<B: Backend>(
    anchors: Tensor<B, 3>,
    deltas: Tensor<B, 3>,
    weights: [f32; 4],
) -> Tensor<B, 3> {
    let part = |t: &Tensor<B, 3>, i: usize| t.clone().narrow(2, i, 1);
    let aw = part(&anchors, 2) - part(&anchors, 0);
    let ah = part(&anchors, 3) - part(&anchors, 1);
    let ax = part(&anchors, 0) + aw.clone() * 0.5;
    let ay = part(&anchors, 1) + ah.clone() * 0.5;
    let cx = ax + part(&deltas, 0).div_scalar(weights[0]) * aw.clone();
    let cy = ay + part(&deltas, 1).div_scalar(weights[1]) * ah.clone();
    let w = part(&deltas, 2)
        .div_scalar(weights[2])
        .clamp(-4.135, 4.135)
        .exp()
        * aw;
    let h = part(&deltas, 3)
        .div_scalar(weights[3])
        .clamp(-4.135, 4.135)
        .exp()
        * ah;
    Tensor::cat(
        vec![
            cx.clone() - w.clone() * 0.5,
            cy.clone() - h.clone() * 0.5,
            cx + w * 0.5,
            cy + h * 0.5,
        ],
        2,
    )
}

/// Generalised IoU `[N, A, 1]` of boxes `[N, A, 4]` (corners) with targets `[N or 1, A, 4]`,
/// finite for boxes without area.
pub fn giou<B: Backend>(pred: Tensor<B, 3>, target: Tensor<B, 3>) -> Tensor<B, 3> {
    let part = |t: &Tensor<B, 3>, i: usize| t.clone().narrow(2, i, 1);
    let (px0, py0, px1, py1) = (
        part(&pred, 0),
        part(&pred, 1),
        part(&pred, 2),
        part(&pred, 3),
    );
    let (tx0, ty0, tx1, ty1) = (
        part(&target, 0),
        part(&target, 1),
        part(&target, 2),
        part(&target, 3),
    );
    let area_p =
        (px1.clone() - px0.clone()).clamp_min(0.0) * (py1.clone() - py0.clone()).clamp_min(0.0);
    let area_t =
        (tx1.clone() - tx0.clone()).clamp_min(0.0) * (ty1.clone() - ty0.clone()).clamp_min(0.0);
    let iw = (px1.clone().min_pair(tx1.clone()) - px0.clone().max_pair(tx0.clone())).clamp_min(0.0);
    let ih = (py1.clone().min_pair(ty1.clone()) - py0.clone().max_pair(ty0.clone())).clamp_min(0.0);
    let inter = iw * ih;
    let union = area_p + area_t - inter.clone() + 1e-7;
    let iou = inter / union.clone();
    let cw = px1.max_pair(tx1) - px0.min_pair(tx0);
    let ch = py1.max_pair(ty1) - py0.min_pair(ty0);
    let hull = cw * ch + 1e-7;
    iou - (hull.clone() - union) / hull
}

/// Generalised-IoU loss `1 - GIoU` between `[N, A, 4]` boxes on the anchors `mask` selects.
pub fn giou_loss<B: Backend>(
    pred: Tensor<B, 3>,
    target: Tensor<B, 3>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    (giou(pred, target).neg().add_scalar(1.0) * mask.unsqueeze_dim::<3>(2)).sum()
}

/// IoU loss `-ln IoU` (Yu et al., 2016, as FCOS uses it) between `[N, A, 4]` boxes, each
/// weighted by `weights` (`[N, A]`: 0 where there is no target). IoU is smoothed as
/// `(intersection + 1) / (union + 1)`, as FCOS's reference code does, so that boxes that do not
/// meet still have a finite loss.
pub fn iou_loss<B: Backend>(
    pred: Tensor<B, 3>,
    target: Tensor<B, 3>,
    weights: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let part = |t: &Tensor<B, 3>, i: usize| t.clone().narrow(2, i, 1);
    let (px0, py0, px1, py1) = (
        part(&pred, 0),
        part(&pred, 1),
        part(&pred, 2),
        part(&pred, 3),
    );
    let (tx0, ty0, tx1, ty1) = (
        part(&target, 0),
        part(&target, 1),
        part(&target, 2),
        part(&target, 3),
    );
    let area_p =
        (px1.clone() - px0.clone()).clamp_min(0.0) * (py1.clone() - py0.clone()).clamp_min(0.0);
    let area_t =
        (tx1.clone() - tx0.clone()).clamp_min(0.0) * (ty1.clone() - ty0.clone()).clamp_min(0.0);
    let iw = (px1.min_pair(tx1) - px0.max_pair(tx0)).clamp_min(0.0);
    let ih = (py1.min_pair(ty1) - py0.max_pair(ty0)).clamp_min(0.0);
    let inter = iw * ih;
    let union = area_p + area_t - inter.clone();
    let iou = inter.add_scalar(1.0) / union.add_scalar(1.0);
    (iou.log().neg() * weights.unsqueeze_dim::<3>(2)).sum()
}

/// Binary cross-entropy of `[N, A]` logits against targets in `[0, 1]` (soft targets, such as
/// FCOS's centre-ness, allowed), each weighted by `weights` (`[N, A]`), summed.
pub fn binary_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 2>,
    weights: Tensor<B, 2>,
) -> Tensor<B, 1> {
    // The form of `sigmoid_focal_loss`'s cross-entropy, finite for large |x|.
    let ce = relu(logits.clone()) - logits.clone() * targets + logits.abs().neg().exp().log1p();
    (ce * weights).sum()
}

/// Per-anchor softmax cross-entropy `[N, A]` of `[N, A, K]` logits against class indices
/// (`[N, A]`, 0 = background).
pub fn softmax_cross_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
) -> Tensor<B, 2> {
    log_softmax(logits, 2)
        .gather(2, labels.unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2)
        .neg()
}

/// SSD's hard-negative mining for one batch: weights (`N * A`, row-major) that keep every
/// positive anchor (label > 0) and, per image, the `ratio` times as many background anchors
/// (label 0) with the highest loss; ignored anchors (label < 0) get 0. At least `min_negatives`
/// negatives are kept per image so that images without objects still teach background.
pub fn hard_negative_weights(
    losses: &[f32],
    labels: &[i64],
    anchors: usize,
    ratio: usize,
    min_negatives: usize,
) -> Vec<f32> {
    let mut weights = vec![0f32; labels.len()];
    for (image, chunk) in labels.chunks(anchors.max(1)).enumerate() {
        let offset = image * anchors;
        let positives = chunk.iter().filter(|&&l| l > 0).count();
        let mut negatives: Vec<usize> = chunk
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == 0)
            .map(|(i, _)| i)
            .collect();
        let keep = (positives * ratio).max(min_negatives).min(negatives.len());
        if keep < negatives.len() {
            negatives.select_nth_unstable_by(keep, |&a, &b| {
                losses[offset + b]
                    .total_cmp(&losses[offset + a])
                    .then(a.cmp(&b))
            });
        }
        for &i in &negatives[..keep] {
            weights[offset + i] = 1.0;
        }
        for (i, &l) in chunk.iter().enumerate() {
            if l > 0 {
                weights[offset + i] = 1.0;
            }
        }
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    type B = autodl_backend::burn::backend::Flex;

    fn t3(v: Vec<f32>, shape: [usize; 3]) -> Tensor<B, 3> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn t2(v: Vec<f32>, shape: [usize; 2]) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn value(t: Tensor<B, 1>) -> f32 {
        t.into_data().to_vec::<f32>().expect("f32")[0]
    }

    #[test]
    fn focal_loss_matches_the_formula() {
        // One anchor, two classes: logits 2 (target 1) and -1 (target 0).
        let loss = value(sigmoid_focal_loss(
            t3(vec![2.0, -1.0], [1, 1, 2]),
            t3(vec![1.0, 0.0], [1, 1, 2]),
            t2(vec![1.0], [1, 1]),
            0.25,
            2.0,
        ));
        let s = |x: f32| 1.0 / (1.0 + (-x).exp());
        let (p0, p1) = (s(2.0), s(-1.0));
        let expected =
            0.25 * (1.0 - p0).powi(2) * -(p0.ln()) + 0.75 * p1.powi(2) * -((1.0 - p1).ln());
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
        // An ignored anchor adds nothing; gamma 0 and alpha 0.5 give half the cross-entropy.
        let zero = value(sigmoid_focal_loss(
            t3(vec![2.0, -1.0], [1, 1, 2]),
            t3(vec![1.0, 0.0], [1, 1, 2]),
            t2(vec![0.0], [1, 1]),
            0.25,
            2.0,
        ));
        assert_eq!(zero, 0.0);
        let half_ce = value(sigmoid_focal_loss(
            t3(vec![30.0], [1, 1, 1]),
            t3(vec![0.0], [1, 1, 1]),
            t2(vec![1.0], [1, 1]),
            0.5,
            0.0,
        ));
        assert!((half_ce - 15.0).abs() < 1e-3, "{half_ce}");
    }

    #[test]
    fn smooth_l1_and_giou() {
        let l = value(smooth_l1(
            t3(vec![0.0, 0.0, 0.0, 2.0], [1, 1, 4]),
            t3(vec![0.05, 0.0, 0.0, 0.0], [1, 1, 4]),
            t2(vec![1.0], [1, 1]),
            0.1,
        ));
        assert!((l - (0.5 * 0.0025 / 0.1 + 1.95)).abs() < 1e-5, "{l}");
        let same = value(giou_loss(
            t3(vec![0.0, 0.0, 2.0, 2.0], [1, 1, 4]),
            t3(vec![0.0, 0.0, 2.0, 2.0], [1, 1, 4]),
            t2(vec![1.0], [1, 1]),
        ));
        assert!(same.abs() < 1e-5);
        // Disjoint unit boxes two apart: IoU 0, hull 3 x 1, union 2: GIoU = -1/3.
        let apart = value(giou_loss(
            t3(vec![0.0, 0.0, 1.0, 1.0], [1, 1, 4]),
            t3(vec![2.0, 0.0, 3.0, 1.0], [1, 1, 4]),
            t2(vec![1.0], [1, 1]),
        ));
        assert!((apart - 4.0 / 3.0).abs() < 1e-4, "{apart}");
    }

    #[test]
    fn iou_loss_and_binary_cross_entropy() {
        // Equal boxes: IoU 1, loss 0.
        let same = value(iou_loss(
            t3(vec![0.0, 0.0, 4.0, 4.0], [1, 1, 4]),
            t3(vec![0.0, 0.0, 4.0, 4.0], [1, 1, 4]),
            t2(vec![1.0], [1, 1]),
        ));
        assert!(same.abs() < 1e-6, "{same}");
        // A 4 x 4 box against its left half (4 x 2): intersection 8, union 16, smoothed
        // IoU 9 / 17, weighted by 0.5.
        let half = value(iou_loss(
            t3(vec![0.0, 0.0, 4.0, 4.0], [1, 1, 4]),
            t3(vec![0.0, 0.0, 2.0, 4.0], [1, 1, 4]),
            t2(vec![0.5], [1, 1]),
        ));
        assert!((half - 0.5 * -(9f32 / 17.0).ln()).abs() < 1e-5, "{half}");
        // BCE of logit 0 against 0.3 is ln 2 whatever the target; of logit 2 against 1,
        // -ln sigmoid(2); a zero weight drops the element.
        let bce = value(binary_cross_entropy(
            t2(vec![0.0, 2.0, 50.0], [1, 3]),
            t2(vec![0.3, 1.0, 0.0], [1, 3]),
            t2(vec![1.0, 1.0, 0.0], [1, 3]),
        ));
        let expected = 2f32.ln() + (1.0 + (-2f32).exp()).ln();
        assert!((bce - expected).abs() < 1e-5, "{bce} vs {expected}");
    }

    #[test]
    fn tensor_decode_matches_the_host_coder() {
        let coder = crate::BoxCoder {
            weights: [10.0, 10.0, 5.0, 5.0],
        };
        let anchor = [10.0, 20.0, 42.0, 36.0];
        let deltas = [1.0, -2.0, 0.5, -0.3];
        let host = coder.decode(&anchor, &deltas);
        let dev = decode(
            t3(anchor.to_vec(), [1, 1, 4]),
            t3(deltas.to_vec(), [1, 1, 4]),
            coder.weights,
        )
        .into_data()
        .to_vec::<f32>()
        .expect("f32");
        for (a, b) in host.iter().zip(&dev) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn mining_keeps_the_hardest_negatives() {
        let losses = [0.1, 0.9, 0.5, 0.7, 0.2, 0.3];
        let labels = [1, 0, 0, 0, -1, 0];
        // One positive, ratio 2: the two hardest negatives (0.9 and 0.7).
        assert_eq!(
            hard_negative_weights(&losses, &labels, 6, 2, 0),
            vec![1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
        );
        // An image without objects keeps the minimum.
        assert_eq!(
            hard_negative_weights(&losses, &[0, 0, 0, 0, 0, 0], 6, 3, 1),
            vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        );
        let l: Vec<f32> = softmax_cross_entropy::<B>(
            t3(vec![0.0, 0.0, 5.0, 0.0], [1, 2, 2]),
            Tensor::from_data(TensorData::new(vec![1i64, 0], [1, 2]), &Default::default()),
        )
        .into_data()
        .to_vec()
        .expect("f32");
        assert!(
            (l[0] - 2f32.ln()).abs() < 1e-5 && (l[1] - (1.0 + (-5f32).exp()).ln()).abs() < 1e-4,
            "{l:?}"
        );
    }
}
