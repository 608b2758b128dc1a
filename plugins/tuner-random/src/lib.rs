//! Seeded random search: the baseline every smarter tuner must beat.

use autodl_api::{
    Dimension, ParamValue, Params, SearchSpace, TrialRecord, Tuner, TunerRegistration, inventory,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Samples each dimension independently; log-uniform dimensions on a log scale.
pub struct RandomSearch;

inventory::submit!(TunerRegistration(&RandomSearch));

impl Tuner for RandomSearch {
    fn name(&self) -> &'static str {
        "random"
    }

    fn suggest(&self, space: &SearchSpace, history: &[TrialRecord], seed: u64) -> Option<Params> {
        // A fresh stream per trial number keeps suggestions reproducible and distinct.
        let mut rng = StdRng::seed_from_u64(
            seed ^ (history.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut params = Params::new();
        for (name, dim) in space {
            let value = match dim {
                Dimension::LogUniform { low, high } => {
                    ParamValue::Number((rng.random_range(low.ln()..=high.ln())).exp())
                }
                Dimension::Uniform { low, high } => {
                    ParamValue::Number(rng.random_range(*low..=*high))
                }
                Dimension::Choice { options } if options.is_empty() => return None,
                Dimension::Choice { options } => {
                    ParamValue::Text(options[rng.random_range(0..options.len())].clone())
                }
            };
            params.insert(name.clone(), value);
        }
        Some(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_inside_the_space_reproducibly() {
        let mut space = SearchSpace::new();
        space.insert(
            "lr".into(),
            Dimension::LogUniform {
                low: 1e-5,
                high: 1e-1,
            },
        );
        space.insert(
            "backbone".into(),
            Dimension::Choice {
                options: vec!["a".into(), "b".into()],
            },
        );
        let a = RandomSearch.suggest(&space, &[], 1).unwrap();
        assert_eq!(a, RandomSearch.suggest(&space, &[], 1).unwrap());
        let Some(ParamValue::Number(lr)) = a.get("lr") else {
            panic!("no lr")
        };
        assert!((1e-5..=1e-1).contains(lr));
    }
}
