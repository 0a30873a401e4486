//! `nvidia-smi mig -lgip/-lgipp/-lgi/-lci`: stub.
use crate::args::MigCmd;
use crate::nvml::Nvml;
pub fn run(_n: &Nvml, _c: &MigCmd, _ids: Option<&[String]>, out: &mut dyn FnMut(&str)) -> i32 {
    out("No MIG-enabled devices found.\n");
    6
}
