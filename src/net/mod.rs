//! The network: DIMSE command sets, the SCP (C-ECHO, C-STORE) and SCU operations. The only module
//! that speaks DIMSE.

pub mod dimse;
pub mod scp;
pub mod scu;
