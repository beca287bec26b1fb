//! Every code pulmo writes, in one place. Checked against pydicom 3.0.2's DICOM code tables
//! (`pydicom/sr/_concepts_dict.py`): CID 7150 categories, CID 7151 lobes, CID 6102 ground-glass,
//! CID 7162 algorithm family. DICOM has no concept for lung consolidation; the SNOMED CT code is used
//! and listed in the conformance statement.

use super::common::{Code, code};

pub const ANATOMICAL_STRUCTURE: Code = code("91723000", "SCT", "Anatomical Structure");
pub const MORPHOLOGICALLY_ABNORMAL_STRUCTURE: Code =
    code("49755003", "SCT", "Morphologically Abnormal Structure");
pub const LUNG: Code = code("39607008", "SCT", "Lung");
pub const UPPER_LOBE_OF_LUNG: Code = code("45653009", "SCT", "Upper lobe of lung");
pub const MIDDLE_LOBE_OF_RIGHT_LUNG: Code = code("72481006", "SCT", "Middle lobe of right lung");
pub const LOWER_LOBE_OF_LUNG: Code = code("90572001", "SCT", "Lower lobe of lung");
pub const RIGHT: Code = code("24028007", "SCT", "Right");
pub const LEFT: Code = code("7771000", "SCT", "Left");
pub const GROUND_GLASS_OPACITY: Code = code("112120", "DCM", "Ground glass opacity");
pub const LUNG_CONSOLIDATION: Code = code("95436008", "SCT", "Lung consolidation");
pub const ARTIFICIAL_INTELLIGENCE: Code = code("123110", "DCM", "Artificial Intelligence");
pub const SEGMENTATION: Code = code("113076", "DCM", "Segmentation");
pub const SOURCE_IMAGE_FOR_PROCESSING: Code = code(
    "121322",
    "DCM",
    "Source image for image processing operation",
);
