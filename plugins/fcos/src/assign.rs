//! Which object each location of the pyramid regresses: FCOS's size-range assignment, with
//! optional centre sampling, and the centre-ness target.
//!
//! A location on a level of stride `s` sits at the centre of its feature cell, `(x + 0.5) s`,
//! `(y + 0.5) s` in input pixels. It is positive for an object when it lies strictly inside the
//! box and the largest of its distances to the four sides, `max(l, t, r, b)`, lies within the
//! level's range (ends included, as in the reference code); when several objects qualify, the
//! one of smallest area wins (the paper's rule for ambiguous locations), the first listed on a
//! tie. With centre sampling the location must also lie within `radius` strides of the box
//! centre (that square clipped to the box), the refinement of FCOS's later versions.
//!
//! The paper's ranges on P3 to P7 (strides 8 to 128) are `[0, 64]`, `[64, 128]`, `[128, 256]`,
//! `[256, 512]` and `[512, inf)`: a level regresses up to 8 of its strides, and the level below
//! from there. That suits objects of 10 to 800 px in images of 800 px or more. Our tiles are
//! 256 px and our objects (tree crowns) 10 to 60 px, so [`Assigner::new`] takes the bound in
//! strides as a parameter (`range-scale`), defaulting to the paper's 8 scaled by 256 / 800 and
//! rounded, 2.5: on strides 8, 16, 32 and 64 the ranges become `[0, 20]`, `[20, 40]`,
//! `[40, 80]` and `[80, inf)`, which spreads 10 to 60 px objects over the three finest levels
//! instead of putting them all on the finest.

use autodl_detection::Box4;

/// One pyramid level's share of the assignment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    /// Stride in input pixels.
    pub stride: usize,
    /// Smallest `max(l, t, r, b)` this level regresses.
    pub low: f32,
    /// Largest `max(l, t, r, b)` this level regresses (infinite on the coarsest).
    pub high: f32,
}

/// A location of the pyramid: its centre in input pixels and its level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    /// Column of the centre.
    pub x: f32,
    /// Row of the centre.
    pub y: f32,
    /// Index of its level, finest first.
    pub level: usize,
}

/// FCOS's assignment rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Assigner {
    /// The levels, finest first.
    pub levels: Vec<Level>,
    /// Centre-sampling radius in strides, or `None` for every location inside the box.
    pub centre_radius: Option<f32>,
}

impl Assigner {
    /// Levels at `strides` (finest first) whose ranges meet at `range_scale` strides of each
    /// level: level `i` regresses `max(l, t, r, b)` from `range_scale * strides[i - 1]` (0 on
    /// the finest) to `range_scale * strides[i]` (no bound on the coarsest).
    pub fn new(strides: &[usize], range_scale: f32, centre_radius: Option<f32>) -> Self {
        let levels = strides
            .iter()
            .enumerate()
            .map(|(i, &stride)| Level {
                stride,
                low: if i == 0 {
                    0.0
                } else {
                    range_scale * strides[i - 1] as f32
                },
                high: if i + 1 == strides.len() {
                    f32::INFINITY
                } else {
                    range_scale * stride as f32
                },
            })
            .collect();
        Assigner {
            levels,
            centre_radius,
        }
    }

    /// The locations of levels of `sizes` (`[height, width]` each, finest first), row-major
    /// within a level and level after level: the order the head's outputs are flattened in.
    pub fn locations(&self, sizes: &[[usize; 2]]) -> Vec<Location> {
        let mut out = Vec::with_capacity(sizes.iter().map(|[h, w]| h * w).sum());
        for (level, (&[h, w], l)) in sizes.iter().zip(&self.levels).enumerate() {
            let s = l.stride as f32;
            for y in 0..h {
                for x in 0..w {
                    out.push(Location {
                        x: (x as f32 + 0.5) * s,
                        y: (y as f32 + 0.5) * s,
                        level,
                    });
                }
            }
        }
        out
    }

    /// For each location, the index in `objects` of the object it regresses, or `None` for
    /// background. Objects without area are never assigned.
    pub fn assign(&self, locations: &[Location], objects: &[Box4]) -> Vec<Option<usize>> {
        locations
            .iter()
            .map(|loc| {
                let level = self.levels.get(loc.level)?;
                let mut best: Option<(f32, usize)> = None;
                for (i, b) in objects.iter().enumerate() {
                    let area = (b[2] - b[0]) * (b[3] - b[1]);
                    if area.is_nan() || area <= 0.0 || !self.takes(loc, level, b) {
                        continue;
                    }
                    if best.is_none_or(|(a, _)| area < a) {
                        best = Some((area, i));
                    }
                }
                best.map(|(_, i)| i)
            })
            .collect()
    }

    /// Whether `loc` on `level` is positive for box `b`, ambiguity aside.
    fn takes(&self, loc: &Location, level: &Level, b: &Box4) -> bool {
        let [l, t, r, bottom] = distances(loc, b);
        if l.min(t).min(r).min(bottom) <= 0.0 {
            return false;
        }
        let m = l.max(t).max(r).max(bottom);
        if m < level.low || m > level.high {
            return false;
        }
        match self.centre_radius {
            None => true,
            Some(radius) => {
                let reach = radius * level.stride as f32;
                let (cx, cy) = ((b[0] + b[2]) * 0.5, (b[1] + b[3]) * 0.5);
                let inner = [
                    (cx - reach).max(b[0]),
                    (cy - reach).max(b[1]),
                    (cx + reach).min(b[2]),
                    (cy + reach).min(b[3]),
                ];
                distances(loc, &inner).iter().all(|&d| d > 0.0)
            }
        }
    }
}

/// Distances `[l, t, r, b]` from a location to the sides of box `b` (negative outside it).
pub fn distances(loc: &Location, b: &Box4) -> [f32; 4] {
    [loc.x - b[0], loc.y - b[1], b[2] - loc.x, b[3] - loc.y]
}

/// FCOS's centre-ness target of a location inside box `b`:
/// `sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`, 1 at the centre and 0 on a side.
pub fn centreness(loc: &Location, b: &Box4) -> f32 {
    let [l, t, r, bottom] = distances(loc, b).map(|d| d.max(0.0));
    let ratio = |a: f32, c: f32| {
        let hi = a.max(c);
        if hi > 0.0 { a.min(c) / hi } else { 0.0 }
    };
    (ratio(l, r) * ratio(t, bottom)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f32, y: f32, level: usize) -> Location {
        Location { x, y, level }
    }

    #[test]
    fn ranges_meet_at_the_scale_in_strides() {
        let a = Assigner::new(&[8, 16, 32, 64], 2.5, None);
        let bounds: Vec<(f32, f32)> = a.levels.iter().map(|l| (l.low, l.high)).collect();
        assert_eq!(
            bounds,
            vec![
                (0.0, 20.0),
                (20.0, 40.0),
                (40.0, 80.0),
                (80.0, f32::INFINITY)
            ]
        );
        // The paper's ranges on P3 to P7.
        let paper = Assigner::new(&[8, 16, 32, 64, 128], 8.0, None);
        let highs: Vec<f32> = paper.levels.iter().map(|l| l.high).collect();
        assert_eq!(highs, vec![64.0, 128.0, 256.0, 512.0, f32::INFINITY]);
    }

    #[test]
    fn locations_are_cell_centres_level_after_level() {
        let a = Assigner::new(&[8, 16], 2.5, None);
        let locs = a.locations(&[[2, 3], [1, 2]]);
        let xy: Vec<(f32, f32, usize)> = locs.iter().map(|l| (l.x, l.y, l.level)).collect();
        assert_eq!(
            xy,
            vec![
                (4.0, 4.0, 0),
                (12.0, 4.0, 0),
                (20.0, 4.0, 0),
                (4.0, 12.0, 0),
                (12.0, 12.0, 0),
                (20.0, 12.0, 0),
                (8.0, 8.0, 1),
                (24.0, 8.0, 1),
            ]
        );
    }

    #[test]
    fn the_range_decides_the_level_with_both_ends_included() {
        let a = Assigner::new(&[8, 16, 32, 64], 2.5, None);
        // Location (12, 12): a box from (0, 0) to (32, 20) gives l = t = 12, r = 20, b = 8:
        // max 20, the top of level 0's range and the bottom of level 1's, so both take it.
        let b = [0.0, 0.0, 32.0, 20.0];
        assert_eq!(a.assign(&[at(12.0, 12.0, 0)], &[b]), vec![Some(0)]);
        assert_eq!(a.assign(&[at(12.0, 12.0, 1)], &[b]), vec![Some(0)]);
        // A quarter pixel wider (max 20.25): past level 0's range, still in level 1's.
        let wider = [0.0, 0.0, 32.25, 20.0];
        assert_eq!(a.assign(&[at(12.0, 12.0, 0)], &[wider]), vec![None]);
        assert_eq!(a.assign(&[at(12.0, 12.0, 1)], &[wider]), vec![Some(0)]);
        // Max 19.75 is below level 1's range.
        let narrower = [0.0, 0.0, 31.75, 20.0];
        assert_eq!(a.assign(&[at(12.0, 12.0, 1)], &[narrower]), vec![None]);
        // Level 3 has no upper bound: max 300 is its.
        let huge = [0.0, 0.0, 312.0, 20.0];
        assert_eq!(a.assign(&[at(12.0, 12.0, 3)], &[huge]), vec![Some(0)]);
        assert_eq!(a.assign(&[at(12.0, 12.0, 2)], &[huge]), vec![None]);
    }

    #[test]
    fn a_location_on_a_side_or_outside_is_background() {
        let a = Assigner::new(&[8], 2.5, None);
        // (4, 4) on the left side of a box starting at x = 4: l = 0.
        assert_eq!(
            a.assign(&[at(4.0, 4.0, 0)], &[[4.0, 0.0, 20.0, 10.0]]),
            vec![None]
        );
        assert_eq!(
            a.assign(&[at(4.0, 4.0, 0)], &[[5.0, 0.0, 20.0, 10.0]]),
            vec![None]
        );
        // An empty box is never assigned.
        assert_eq!(
            a.assign(&[at(4.0, 4.0, 0)], &[[0.0, 4.0, 10.0, 4.0]]),
            vec![None]
        );
    }

    #[test]
    fn a_location_inside_two_boxes_takes_the_smaller() {
        let a = Assigner::new(&[8], 2.5, None);
        let loc = at(12.0, 12.0, 0);
        // Areas 400 and 256: the second wins whatever the order.
        let big = [2.0, 2.0, 22.0, 22.0];
        let small = [4.0, 4.0, 20.0, 20.0];
        assert_eq!(a.assign(&[loc], &[big, small]), vec![Some(1)]);
        assert_eq!(a.assign(&[loc], &[small, big]), vec![Some(0)]);
        // Equal areas: the first listed.
        let shifted = [5.0, 4.0, 21.0, 20.0];
        assert_eq!(a.assign(&[loc], &[small, shifted]), vec![Some(0)]);
        assert_eq!(a.assign(&[loc], &[shifted, small]), vec![Some(0)]);
        // A smaller box out of the level's range does not take it from a larger one in range.
        let tiny_far = [11.0, 11.0, 13.0, 40.0];
        assert_eq!(a.assign(&[loc], &[big, tiny_far]), vec![Some(0)]);
    }

    #[test]
    fn centre_sampling_keeps_locations_near_the_centre() {
        // Level of stride 8, radius 1.5: within 12 px of the centre (40, 40) of a 60 px box.
        let with = Assigner::new(&[8], 100.0, Some(1.5));
        let without = Assigner::new(&[8], 100.0, None);
        let b = [10.0, 10.0, 70.0, 70.0];
        let locs = [
            at(36.0, 36.0, 0), // 4 px from the centre on each axis: kept
            at(28.5, 40.0, 0), // 11.5 px left of it: kept
            at(28.0, 40.0, 0), // exactly 12 px: on the sampling square's side, dropped
            at(20.0, 44.0, 0), // 20 px: inside the box, outside the square
        ];
        assert_eq!(with.assign(&locs, &[b]), vec![Some(0), Some(0), None, None]);
        assert_eq!(without.assign(&locs, &[b]), vec![Some(0); 4]);
        // The square is clipped to the box: a 10 px box keeps all its locations.
        let small = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(with.assign(&[at(4.0, 4.0, 0)], &[small]), vec![Some(0)]);
        // The radius is in the level's strides: on stride 16 the square reaches 24 px, so the
        // location 16 px left of the centre is kept there and dropped on stride 8.
        let coarse = Assigner::new(&[16], 100.0, Some(1.5));
        assert_eq!(coarse.assign(&[at(24.0, 40.0, 0)], &[b]), vec![Some(0)]);
        assert_eq!(with.assign(&[at(24.0, 40.0, 0)], &[b]), vec![None]);
    }

    #[test]
    fn centreness_is_one_at_the_centre_and_falls_towards_the_sides() {
        let b = [0.0, 0.0, 40.0, 20.0];
        assert!((centreness(&at(20.0, 10.0, 0), &b) - 1.0).abs() < 1e-6);
        // l = 10, r = 30, t = 5, b = 15: sqrt(1/3 * 1/3) = 1/3.
        assert!((centreness(&at(10.0, 5.0, 0), &b) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(centreness(&at(0.0, 10.0, 0), &b), 0.0);
    }
}
