//! Empty: the conformance checks are in tests/nvml_wrapper.rs.
