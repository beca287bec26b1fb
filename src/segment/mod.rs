//! Image analysis on the source grid: everything between the models' raw labels and the
//! measurements. `infer` runs the models; this module owns what is done with the CT and their
//! output. The order of the stages is stated once, in `pipeline::analyze`.
//!
//! - `lung`: the lungs from the HU alone (body, air, airway, right and left, holes and pleura).
//! - `lobes`: the lobes model's labels laid on that lung, every lung voxel in one lobe.
//! - `postprocess`: connected components, holes, distance, opacities inside the lungs.
//! - `border`: the lungs' border placed by the CT where a lobes model is unsure.
//! - `flood`: breadth-first growth within a slice, for the CT rules.
//! - `opacity_edge`: opacities carried out to the edge the CT shows.
//! - `dense`: the lung's dense structures against a finding.
//! - `vessel_opacities`: small findings that are a vessel, dropped.
//! - `fissure_surface`: each fissure as one smooth surface on the CT's faint ridge.

pub mod border;
pub mod dense;
pub mod fissure_surface;
pub mod flood;
pub mod lobes;
pub mod lung;
pub mod opacity_edge;
pub mod postprocess;
pub mod vessel_opacities;
