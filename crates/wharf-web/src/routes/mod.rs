//! The HTTP routes: submissions and the Dockerflow endpoints.

pub mod dockerflow;
pub mod submit;
