//! One module per group of subcommands; each parses nothing and decides
//! nothing, it builds the parts and calls the crate that owns the role.

pub mod approvals;
pub mod demo;
pub mod labels;
pub mod ops;
pub mod render;
pub mod serve;
