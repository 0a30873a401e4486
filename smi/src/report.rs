//! `-q` (text) and `-q -x` (XML): stub.
use crate::nvml::{Device, Nvml};
pub fn render(_n: &Nvml, _d: &[Device], _xml: bool, _s: &[String], _i: bool) -> String {
    String::new()
}
