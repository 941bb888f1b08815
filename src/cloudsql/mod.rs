//! Cloud SQL: the two Admin API calls, the refresh that turns their answers
//! into what a dial needs, and the metadata exchange.

pub(crate) mod admin;
pub(crate) mod mdx;
pub(crate) mod refresh;
