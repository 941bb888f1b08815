//! Cloud SQL: the two Admin API calls and the refresh that turns their answers
//! into what a dial needs.

pub(crate) mod admin;
pub(crate) mod mdx;
pub(crate) mod refresh;
