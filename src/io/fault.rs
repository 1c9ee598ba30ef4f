//! placeholder
/// placeholder
#[derive(Debug)]
pub struct FaultFs;
/// placeholder
#[derive(Debug)]
pub enum FaultKind {}
