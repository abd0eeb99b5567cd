//! Generated typed models (see [`crate::model`]): do not edit the files below by hand, run
//! `ovsdb-modelgen` (command in each file's header).

pub mod nb;
pub mod sb;
pub mod vswitch;
