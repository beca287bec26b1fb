//! What the label values of pulmo's volumes mean: the five lobes and the opacity classes. A leaf
//! module, so that the models (`infer`), the image analysis (`segment`) and the measurements
//! (`quant`) share the definitions without depending on one another.

use serde::{Deserialize, Serialize};

/// The five lobes with their label values in a lobe volume (0 is background).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Lobe {
    #[serde(rename = "RUL")]
    RightUpper = 1,
    #[serde(rename = "RML")]
    RightMiddle = 2,
    #[serde(rename = "RLL")]
    RightLower = 3,
    #[serde(rename = "LUL")]
    LeftUpper = 4,
    #[serde(rename = "LLL")]
    LeftLower = 5,
}

impl Lobe {
    pub const ALL: [Lobe; 5] = [
        Lobe::RightUpper,
        Lobe::RightMiddle,
        Lobe::RightLower,
        Lobe::LeftUpper,
        Lobe::LeftLower,
    ];

    pub fn label(self) -> u8 {
        self as u8
    }

    pub fn from_label(label: u8) -> Option<Lobe> {
        Lobe::ALL.into_iter().find(|l| l.label() == label)
    }

    /// A lobe of the right lung.
    pub fn right(self) -> bool {
        matches!(
            self,
            Lobe::RightUpper | Lobe::RightMiddle | Lobe::RightLower
        )
    }

    pub fn key(self) -> &'static str {
        match self {
            Lobe::RightUpper => "RUL",
            Lobe::RightMiddle => "RML",
            Lobe::RightLower => "RLL",
            Lobe::LeftUpper => "LUL",
            Lobe::LeftLower => "LLL",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Lobe::RightUpper => "right upper lobe",
            Lobe::RightMiddle => "right middle lobe",
            Lobe::RightLower => "right lower lobe",
            Lobe::LeftUpper => "left upper lobe",
            Lobe::LeftLower => "left lower lobe",
        }
    }
}

/// Label values of an opacity volume.
pub mod opacity {
    pub const NONE: u8 = 0;
    pub const GROUND_GLASS: u8 = 1;
    pub const CONSOLIDATION: u8 = 2;
}
