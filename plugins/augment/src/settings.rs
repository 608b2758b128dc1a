//! The parameters each augmentation takes in a `[[augment.steps]]` entry, and building one
//! from them. Every default equals the augmentation's `DEFAULT` (tested), so a step without
//! parameters behaves as the preset does.

use autodl_api::{ParamDecl, ParamKind, Params, ParamsExt, PluginError};

use crate::geometric::{Affine, Dihedral, HFlip, RandomResizedCrop, Rotate, VFlip, Zoom};
use crate::photometric::{Blur, BrightnessContrast, Cutout, GaussianNoise, SaturationHue};

/// An augmentation built from declared parameters.
pub trait Settings: Sized {
    /// The parameters it takes.
    fn decls() -> Vec<ParamDecl>;

    /// The augmentation for `params`, complete and checked against [`Settings::decls`].
    fn from_params(params: &Params) -> Result<Self, String>;

    /// The augmentation for `given` (checked here; missing values take their defaults).
    fn with(given: &Params) -> Result<Self, PluginError> {
        let params = autodl_api::resolve_params(&Self::decls(), given)
            .map_err(|e| PluginError::Other(e.to_string()))?;
        Self::from_params(&params).map_err(PluginError::Other)
    }
}

/// Adds `params` and `configure` from [`Settings`] to an `impl Augmenter` block.
macro_rules! settings_methods {
    () => {
        fn params(&self) -> Vec<autodl_api::ParamDecl> {
            <Self as $crate::settings::Settings>::decls()
        }

        fn configure(
            &self,
            params: &autodl_api::Params,
        ) -> Result<Box<dyn autodl_api::Augmenter>, autodl_api::PluginError> {
            Ok(Box::new(<Self as $crate::settings::Settings>::with(
                params,
            )?))
        }
    };
}
pub(crate) use settings_methods;

fn number(name: &'static str, doc: &'static str, min: f64, max: f64, default: f64) -> ParamDecl {
    ParamDecl::fixed(name, doc, ParamKind::Number { min, max, default })
}

fn get(params: &Params, name: &str) -> Result<f32, String> {
    params
        .number(name)
        .map(|v| v as f32)
        .map_err(|e| e.to_string())
}

macro_rules! no_settings {
    ($($t:ty),*) => {$(
        impl Settings for $t {
            fn decls() -> Vec<ParamDecl> {
                Vec::new()
            }

            fn from_params(_: &Params) -> Result<Self, String> {
                Ok(Self)
            }
        }
    )*};
}

no_settings!(HFlip, VFlip, Dihedral);

const DEGREES: &str = "largest angle either way, in degrees, at strength 1";

impl Settings for Rotate {
    fn decls() -> Vec<ParamDecl> {
        vec![number("degrees", DEGREES, 0.0, 180.0, 30.0)]
    }

    fn from_params(p: &Params) -> Result<Self, String> {
        Ok(Rotate {
            max_degrees: get(p, "degrees")?,
        })
    }
}

impl Settings for RandomResizedCrop {
    fn decls() -> Vec<ParamDecl> {
        vec![
            number(
                "min-scale",
                "smallest window area, as a fraction of the image's",
                0.01,
                1.0,
                0.5,
            ),
            number(
                "max-scale",
                "largest window area, as a fraction of the image's",
                0.01,
                1.0,
                1.0,
            ),
            number(
                "min-aspect",
                "smallest window aspect ratio (width / height)",
                0.1,
                1.0,
                0.75,
            ),
            number(
                "max-aspect",
                "largest window aspect ratio (width / height)",
                1.0,
                10.0,
                4.0 / 3.0,
            ),
        ]
    }

    fn from_params(p: &Params) -> Result<Self, String> {
        let scale = (get(p, "min-scale")?, get(p, "max-scale")?);
        if scale.0 > scale.1 {
            return Err(format!(
                "`min-scale` ({}) is above `max-scale` ({})",
                scale.0, scale.1
            ));
        }
        Ok(RandomResizedCrop {
            size: None,
            scale,
            ratio: (get(p, "min-aspect")?, get(p, "max-aspect")?),
        })
    }
}

impl Settings for Zoom {
    fn decls() -> Vec<ParamDecl> {
        vec![number(
            "max-zoom",
            "largest zoom factor at strength 1",
            1.0,
            4.0,
            1.2,
        )]
    }

    fn from_params(p: &Params) -> Result<Self, String> {
        Ok(Zoom {
            max_zoom: get(p, "max-zoom")?,
        })
    }
}

impl Settings for Affine {
    fn decls() -> Vec<ParamDecl> {
        vec![
            number(
                "scale",
                "scale gain range: the gain is 1 ± scale",
                0.0,
                0.9,
                0.25,
            ),
            number(
                "translate",
                "largest shift, as a fraction of width and height",
                0.0,
                0.5,
                0.1,
            ),
            number("degrees", DEGREES, 0.0, 180.0, 0.0),
            number(
                "shear",
                "largest shear either way, in degrees",
                0.0,
                45.0,
                5.0,
            ),
        ]
    }

    fn from_params(p: &Params) -> Result<Self, String> {
        Ok(Affine {
            scale: get(p, "scale")?,
            translate: get(p, "translate")?,
            rotate_degrees: get(p, "degrees")?,
            shear_degrees: get(p, "shear")?,
        })
    }
}

impl Settings for BrightnessContrast {
    fn decls() -> Vec<ParamDecl> {
        vec![
            number(
                "brightness",
                "largest shift, in standard deviations of the normalised image",
                0.0,
                2.0,
                0.2,
            ),
            number(
                "contrast",
                "contrast gain range: the gain is 1 ± contrast",
                0.0,
                0.9,
                0.2,
            ),
        ]
    }

    fn from_params(p: &Params) -> Result<Self, String> {
        Ok(BrightnessContrast {
            brightness: get(p, "brightness")?,
            contrast: get(p, "contrast")?,
        })
    }
}

impl Settings for SaturationHue {
    fn decls() -> Vec<ParamDecl> {
        vec![
            number(
                "saturation",
                "saturation gain range: the gain is 1 ± saturation",
                0.0,
                1.0,
                0.5,
            ),
            number("hue", "largest hue turn, in degrees", 0.0, 180.0, 18.0),
        ]
    }

    fn from_params(p: &Params) -> Result<Self, String> {
        Ok(SaturationHue {
            saturation: get(p, "saturation")?,
            hue_degrees: get(p, "hue")?,
        })
    }
}

impl Settings for GaussianNoise {
    fn decls() -> Vec<ParamDecl> {
        vec![number(
            "sigma",
            "largest standard deviation, in normalised units",
            0.0,
            2.0,
            0.1,
        )]
    }

    fn from_params(p: &Params) -> Result<Self, String> {
        Ok(GaussianNoise {
            sigma: get(p, "sigma")?,
        })
    }
}

impl Settings for Blur {
    fn decls() -> Vec<ParamDecl> {
        vec![number(
            "sigma",
            "largest standard deviation, in pixels",
            0.0,
            10.0,
            1.5,
        )]
    }

    fn from_params(p: &Params) -> Result<Self, String> {
        Ok(Blur {
            max_sigma: get(p, "sigma")?,
        })
    }
}

impl Settings for Cutout {
    fn decls() -> Vec<ParamDecl> {
        vec![
            ParamDecl::fixed(
                "holes",
                "most holes",
                ParamKind::Integer {
                    min: 1,
                    max: 32,
                    default: 3,
                },
            ),
            number(
                "size",
                "largest hole side, as a fraction of the image side",
                0.01,
                1.0,
                0.2,
            ),
        ]
    }

    fn from_params(p: &Params) -> Result<Self, String> {
        Ok(Cutout {
            holes: p.number("holes").map_err(|e| e.to_string())? as u32,
            size: get(p, "size")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults<T: Settings>() -> T {
        T::with(&Params::new()).unwrap()
    }

    #[test]
    fn defaults_are_the_presets() {
        assert_eq!(defaults::<Rotate>(), Rotate::DEFAULT);
        assert_eq!(defaults::<RandomResizedCrop>(), RandomResizedCrop::DEFAULT);
        assert_eq!(defaults::<Zoom>(), Zoom::DEFAULT);
        assert_eq!(defaults::<Affine>(), Affine::DEFAULT);
        assert_eq!(
            defaults::<BrightnessContrast>(),
            BrightnessContrast::DEFAULT
        );
        assert_eq!(defaults::<SaturationHue>(), SaturationHue::DEFAULT);
        assert_eq!(defaults::<GaussianNoise>(), GaussianNoise::DEFAULT);
        assert_eq!(defaults::<Blur>(), Blur::DEFAULT);
        assert_eq!(defaults::<Cutout>(), Cutout::DEFAULT);
    }

    #[test]
    fn given_values_are_used_and_bad_ones_refused() {
        let mut p = Params::new();
        p.insert("degrees".into(), autodl_api::ParamValue::Number(10.0));
        assert_eq!(Rotate::with(&p).unwrap().max_degrees, 10.0);
        p.insert("degrees".into(), autodl_api::ParamValue::Number(500.0));
        let err = Rotate::with(&p).unwrap_err().to_string();
        assert!(err.contains("degrees") && err.contains("180"), "{err}");
        let mut p = Params::new();
        p.insert("min-scale".into(), autodl_api::ParamValue::Number(0.9));
        p.insert("max-scale".into(), autodl_api::ParamValue::Number(0.5));
        assert!(RandomResizedCrop::with(&p).is_err());
    }
}
