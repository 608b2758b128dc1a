//! Where YOLOv3's predictions sit and which of them learn which object: the prediction layout
//! over the three grids, and the paper's assignment of each object to the one prior (of nine,
//! across the scales) whose shape fits it best, at the cell holding its centre, with the priors
//! that fit an object well but were not assigned left out of the objectness loss.

use autodl_detection::{Box4, iou};

use crate::kmeans::{Size, wh_iou};

/// Strides of the three detection scales, finest first.
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// Priors (anchors) per cell on each scale.
pub const PER_SCALE: usize = 3;

/// Where each prediction of a window is: the grids of the three scales, finest first, flattened
/// scale by scale, each row-major by cell and then by prior (the order
/// `autodl_train::det::per_anchor` lays a head's output out in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `[height, width]` of each scale's grid, finest first.
    pub grids: Vec<[usize; 2]>,
    /// The first prediction of each scale.
    offsets: Vec<usize>,
    /// Predictions in all.
    len: usize,
}

/// One prediction's place: scale, cell row and column, and prior on the scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Scale index (0 = stride 8).
    pub scale: usize,
    /// Cell row.
    pub y: usize,
    /// Cell column.
    pub x: usize,
    /// Prior on the scale, `0..PER_SCALE`.
    pub prior: usize,
}

impl Layout {
    /// The layout of grids of the given sizes, finest first.
    pub fn new(grids: Vec<[usize; 2]>) -> Self {
        let mut offsets = Vec::with_capacity(grids.len());
        let mut len = 0;
        for g in &grids {
            offsets.push(len);
            len += g[0] * g[1] * PER_SCALE;
        }
        Layout {
            grids,
            offsets,
            len,
        }
    }

    /// Predictions in all.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no prediction.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index of the prediction at `place`.
    pub fn index(&self, p: Place) -> usize {
        self.offsets[p.scale] + (p.y * self.grids[p.scale][1] + p.x) * PER_SCALE + p.prior
    }

    /// The place of prediction `index` (below [`Layout::len`]).
    pub fn place(&self, index: usize) -> Place {
        let scale = self.offsets.iter().rposition(|&o| o <= index).unwrap_or(0);
        let local = index - self.offsets[scale];
        let cell = local / PER_SCALE;
        let w = self.grids[scale][1].max(1);
        Place {
            scale,
            y: cell / w,
            x: cell % w,
            prior: local % PER_SCALE,
        }
    }
}

/// What one prediction learns from its object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assigned {
    /// Index of the object in the image's list.
    pub object: usize,
    /// The prediction that learns it ([`Layout::index`]).
    pub index: usize,
    /// The object's centre within its cell, in cells (`0..1`): the targets of the sigmoid x/y
    /// offsets.
    pub offset: [f32; 2],
    /// `ln(object side / prior side)` for width and height: the targets of the size outputs.
    pub log_size: [f32; 2],
}

/// The assignment of one image's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTargets {
    /// One entry per assigned object, in object order.
    pub assigned: Vec<Assigned>,
    /// Per prediction: left out of the objectness loss (a prior that overlaps an object by more
    /// than the ignore IoU but learns no object).
    pub ignored: Vec<bool>,
}

/// The prior box of `prior` (size `anchor`) at a cell of a scale of stride `stride`: centred
/// on the cell.
fn prior_box(stride: f32, y: usize, x: usize, anchor: Size) -> Box4 {
    let (cx, cy) = ((x as f32 + 0.5) * stride, (y as f32 + 0.5) * stride);
    [
        cx - 0.5 * anchor[0],
        cy - 0.5 * anchor[1],
        cx + 0.5 * anchor[0],
        cy + 0.5 * anchor[1],
    ]
}

/// Assigns `objects` as YOLOv3 does. `anchors` holds `PER_SCALE` priors per scale of `layout`,
/// finest scale first. Each object goes to the prior whose shape fits it best (IoU of sizes
/// aligned at a corner, over all the priors of all scales; the first of equals), at the cell of
/// that prior's scale holding the object's centre. When two objects claim the same prediction
/// the first keeps it. A prediction that learns no object but whose prior box (centred on its
/// cell) overlaps some object by more than `ignore_iou` is ignored in the objectness loss.
/// Objects without area are skipped.
pub fn assign(
    objects: &[Box4],
    anchors: &[Size],
    layout: &Layout,
    ignore_iou: f32,
) -> ImageTargets {
    let mut assigned: Vec<Assigned> = Vec::new();
    let mut taken = vec![false; layout.len()];
    for (o, b) in objects.iter().enumerate() {
        let (w, h) = (b[2] - b[0], b[3] - b[1]);
        if !(w > 0.0 && h > 0.0) {
            continue;
        }
        let Some((best, _)) = anchors
            .iter()
            .take(layout.grids.len() * PER_SCALE)
            .enumerate()
            .map(|(i, &a)| (i, wh_iou([w, h], a)))
            .fold(None, |acc: Option<(usize, f32)>, x| match acc {
                Some(a) if a.1 >= x.1 => Some(a),
                _ => Some(x),
            })
        else {
            continue;
        };
        let scale = best / PER_SCALE;
        let stride = STRIDES[scale] as f32;
        let [gh, gw] = layout.grids[scale];
        if gh == 0 || gw == 0 {
            continue;
        }
        let (cx, cy) = ((b[0] + b[2]) * 0.5 / stride, (b[1] + b[3]) * 0.5 / stride);
        let x = (cx.floor().max(0.0) as usize).min(gw - 1);
        let y = (cy.floor().max(0.0) as usize).min(gh - 1);
        let index = layout.index(Place {
            scale,
            y,
            x,
            prior: best % PER_SCALE,
        });
        if taken[index] {
            continue;
        }
        taken[index] = true;
        let anchor = anchors[best];
        assigned.push(Assigned {
            object: o,
            index,
            offset: [
                (cx - x as f32).clamp(0.0, 1.0),
                (cy - y as f32).clamp(0.0, 1.0),
            ],
            log_size: [(w / anchor[0]).ln(), (h / anchor[1]).ln()],
        });
    }
    let mut ignored = vec![false; layout.len()];
    for b in objects {
        for (scale, &[gh, gw]) in layout.grids.iter().enumerate() {
            let stride = STRIDES[scale] as f32;
            for prior in 0..PER_SCALE {
                let Some(&anchor) = anchors.get(scale * PER_SCALE + prior) else {
                    continue;
                };
                // Only priors centred within half a prior of the object can overlap it.
                let cells = |lo: f32, hi: f32, half: f32, n: usize| {
                    let first = ((lo - half) / stride - 0.5).ceil().max(0.0) as usize;
                    let last = ((hi + half) / stride - 0.5).floor();
                    let last = if last < 0.0 {
                        None
                    } else {
                        Some((last as usize).min(n.saturating_sub(1)))
                    };
                    last.map(|l| first..=l)
                };
                let (Some(xs), Some(ys)) = (
                    cells(b[0], b[2], 0.5 * anchor[0], gw),
                    cells(b[1], b[3], 0.5 * anchor[1], gh),
                ) else {
                    continue;
                };
                for y in ys {
                    for x in xs.clone() {
                        let index = layout.index(Place { scale, y, x, prior });
                        if !taken[index]
                            && !ignored[index]
                            && iou(&prior_box(stride, y, x, anchor), b) > ignore_iou
                        {
                            ignored[index] = true;
                        }
                    }
                }
            }
        }
    }
    ImageTargets { assigned, ignored }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nine priors, three per scale, smallest first.
    const ANCHORS: [Size; 9] = [
        [10.0, 10.0],
        [16.0, 30.0],
        [30.0, 16.0],
        [30.0, 60.0],
        [60.0, 30.0],
        [48.0, 48.0],
        [100.0, 100.0],
        [150.0, 80.0],
        [200.0, 200.0],
    ];

    /// The grids of a 128 x 96 window.
    fn layout() -> Layout {
        Layout::new(vec![[12, 16], [6, 8], [3, 4]])
    }

    #[test]
    fn places_and_indices_round_trip() {
        let l = layout();
        assert_eq!(l.len(), (12 * 16 + 6 * 8 + 3 * 4) * 3);
        for i in 0..l.len() {
            assert_eq!(l.index(l.place(i)), i);
        }
        let p = Place {
            scale: 1,
            y: 2,
            x: 5,
            prior: 1,
        };
        assert_eq!(l.index(p), 12 * 16 * 3 + (2 * 8 + 5) * 3 + 1);
    }

    #[test]
    fn an_object_goes_to_its_best_prior_across_scales_at_its_centre_cell() {
        let l = layout();
        // 50 x 46 centred at (100, 36): the 48 x 48 prior fits it best (IoU 2208 / 2396 = 0.92,
        // against 0.58 for 60 x 30), the last prior of the stride-16 scale; its centre is in
        // cell (x 6, y 2) there, a quarter cell right of and below the cell's corner.
        let t = assign(&[[75.0, 13.0, 125.0, 59.0]], &ANCHORS, &l, 0.5);
        let index = l.index(Place {
            scale: 1,
            y: 2,
            x: 6,
            prior: 2,
        });
        assert_eq!(t.assigned.len(), 1);
        let a = t.assigned[0];
        assert_eq!((a.object, a.index), (0, index));
        assert_eq!(a.offset, [0.25, 0.25]);
        assert!((a.log_size[0] - (50.0f32 / 48.0).ln()).abs() < 1e-6);
        assert!((a.log_size[1] - (46.0f32 / 48.0).ln()).abs() < 1e-6);
        assert!(!t.ignored[index], "the assigned prediction is not ignored");

        // A small, tall object goes to the 16 x 30 prior of the finest scale, a wide large one to
        // 150 x 80 on the coarsest.
        let t = assign(
            &[[3.0, 40.0, 19.0, 70.0], [20.0, 10.0, 164.0, 94.0]],
            &ANCHORS,
            &l,
            0.5,
        );
        let places: Vec<Place> = t.assigned.iter().map(|a| l.place(a.index)).collect();
        assert_eq!(
            places,
            vec![
                Place {
                    scale: 0,
                    y: 6,
                    x: 1,
                    prior: 1
                },
                Place {
                    scale: 2,
                    y: 1,
                    x: 2,
                    prior: 1
                },
            ]
        );
    }

    #[test]
    fn objects_on_the_same_prediction_keep_the_first() {
        let l = layout();
        let t = assign(
            &[[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]],
            &ANCHORS,
            &l,
            0.5,
        );
        assert_eq!(t.assigned.len(), 1);
        assert_eq!(t.assigned[0].object, 0);
        // Empty objects learn nothing.
        assert!(
            assign(&[[5.0, 5.0, 5.0, 9.0]], &ANCHORS, &l, 0.5)
                .assigned
                .is_empty()
        );
    }

    #[test]
    fn well_fitting_priors_that_are_not_assigned_are_ignored() {
        let l = layout();
        // A 48 x 48 object centred on the stride-16 cell (x 2, y 2) = (40, 40): assigned there
        // to the 48 x 48 prior.
        let object = [16.0, 16.0, 64.0, 64.0];
        let t = assign(&[object], &ANCHORS, &l, 0.5);
        let at = |scale, y, x, prior| l.index(Place { scale, y, x, prior });
        assert_eq!(t.assigned[0].index, at(1, 2, 2, 2));
        // Hand-computed IoUs of other priors with the object:
        // - the 48 x 48 prior one cell right, centred at (56, 40): 32 * 48 / (2 * 2304 - 1536)
        //   = 0.5, not above the threshold: kept;
        assert!(!t.ignored[at(1, 2, 3, 2)]);
        // - the 30 x 60 and 60 x 30 priors at the same cell: 30 * 48 / (2304 + 1800 - 1440)
        //   = 0.54: ignored;
        assert!(t.ignored[at(1, 2, 2, 0)] && t.ignored[at(1, 2, 2, 1)]);
        // - the finest scale's 30 x 16 prior at (36, 36): 480 / 2304 = 0.21: kept;
        assert!(!t.ignored[at(0, 4, 4, 2)]);
        // - the stride-32 100 x 100 prior centred at (48, 48): 2304 / 10000: kept.
        assert!(!t.ignored[at(2, 1, 1, 0)]);
        assert_eq!(t.ignored.iter().filter(|&&i| i).count(), 2);
        // A lower threshold ignores more, never the assigned prediction.
        let t = assign(&[object], &ANCHORS, &l, 0.2);
        assert!(t.ignored[at(1, 2, 3, 2)] && t.ignored[at(0, 4, 4, 2)]);
        assert!(!t.ignored[at(1, 2, 2, 2)]);
    }
}
