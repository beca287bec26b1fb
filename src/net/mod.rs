//! The network: DIMSE command sets, the SCP (C-ECHO, C-STORE) and who it admits for how long
//! (`admission`), SCU operations (C-ECHO, C-STORE)
//! and the delivery of the outbox through them. The only module that speaks DIMSE.

pub mod admission;
pub mod deliver;
pub mod dimse;
pub mod pdata;
pub mod scp;
pub mod scu;
