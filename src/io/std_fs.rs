//! placeholder
/// placeholder
#[derive(Debug)]
pub struct StdFs;
